//! The in-process carrier of [`super::NodeLink`] and [`super::HubLink`], for `edgepod up`: the
//! hub and one agent in one process, calling each other through the same interface a remote
//! node uses.
