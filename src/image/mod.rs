//! The local image store.
//! STUB: replaced by the image helper.
