//! Zombie reaping for the agent.
//!
//! The agent is a child subreaper: shims it starts stay its children, and processes orphaned
//! below it come back to it rather than to a PID 1 that may not reap (as on this VM). Every exit
//! status is read from files the shims write, so reaping blindly loses nothing.

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Reaps every child that has exited; returns how many.
pub fn reap_all() -> usize {
    let mut n = 0;
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
        n += 1;
    }
    n
}
