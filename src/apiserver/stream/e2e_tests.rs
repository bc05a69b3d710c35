//! End-to-end tests with the real kubectl (being written).
