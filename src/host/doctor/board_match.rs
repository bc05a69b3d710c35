//! Which board config (`board-configs/*.yaml`) describes this machine, and the board's own
//! fixes for the checks its `kernel[]` entries name (a Raspberry Pi's cmdline.txt line for
//! `cgroup-memory` beats the generic advice).

use crate::host::board::{BoardConfig, detect, identify, load_catalog};

use super::{Check, Options, Status};

pub struct Finding {
    pub check: Check,
    pub config: Option<BoardConfig>,
}

pub fn find(opts: &Options) -> Finding {
    let dir = opts.board_config_dir.display().to_string();
    let catalog = match load_catalog(&opts.board_config_dir) {
        Ok(c) => c,
        Err(e) => {
            return Finding {
                check: Check::warn(
                    "board",
                    format!("cannot read the board configs: {e}"),
                    format!("fix or remove the file named above in {dir}"),
                ),
                config: None,
            };
        }
    };
    if let Some(name) = &opts.board {
        let known = || {
            catalog
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return match catalog.iter().find(|b| &b.name == name) {
            Some(b) => Finding {
                check: Check::pass(
                    "board",
                    format!("{} ({}, given with --board)", b.name, b.description),
                ),
                config: Some(b.clone()),
            },
            None => Finding {
                check: Check::fail(
                    "board",
                    format!(
                        "--board {name}: no such config in {dir} (known: {}); the agent would \
                         refuse to start",
                        if catalog.is_empty() {
                            "none".into()
                        } else {
                            known()
                        }
                    ),
                    "pass the name of a file in the board config dir (without .yaml), or no \
                     --board to detect the board",
                ),
                config: None,
            },
        };
    }
    let identity = identify(&opts.root);
    if let Some(b) = detect(&catalog, &identity) {
        return Finding {
            check: Check::pass("board", format!("detected {} ({})", b.name, b.description)),
            config: Some(b.clone()),
        };
    }
    let what = match (&identity.model, identity.compatible.first()) {
        (Some(m), _) => format!("model {m:?}"),
        (None, Some(c)) => format!("compatible {c:?}"),
        (None, None) => "no device-tree model".to_string(),
    };
    Finding {
        check: Check::warn(
            "board",
            format!(
                "no board config matches this machine ({what}; {} configs in {dir}): no board \
                 labels, reserved resources or board-specific advice",
                catalog.len()
            ),
            format!("pass --board NAME for a board in {dir}, or add a config for this board there"),
        ),
        config: None,
    }
}

/// Replaces the generic fix of every check that did not pass with the board's own, where the
/// board config has one for that check id.
pub fn apply_fixes(board: &BoardConfig, checks: &mut [Check]) {
    for c in checks.iter_mut().filter(|c| c.status != Status::Pass) {
        if let Some(req) = board.kernel.iter().find(|k| k.check == c.id) {
            c.fix = Some(format!("{} (board config {})", req.fix, board.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::board::KernelRequirement;

    #[test]
    fn a_board_fix_replaces_the_generic_one() {
        let board = BoardConfig {
            name: "rpi3bplus".into(),
            kernel: vec![KernelRequirement {
                check: "cgroup-memory".into(),
                fix: "add cgroup_enable=memory to /boot/cmdline.txt".into(),
            }],
            ..BoardConfig::default()
        };
        let mut checks = vec![
            Check::fail("cgroup-memory", "disabled", "generic"),
            Check::fail("cgroup-cpu", "missing", "generic"),
        ];
        apply_fixes(&board, &mut checks);
        assert_eq!(
            checks[0].fix.as_deref(),
            Some("add cgroup_enable=memory to /boot/cmdline.txt (board config rpi3bplus)")
        );
        assert_eq!(checks[1].fix.as_deref(), Some("generic"));
    }
}
