//! The host checks behind `edgepod doctor`.
//!
//! CONTRACT STUB (integrator): the doctor helper replaces this file (or turns it into a folder).
