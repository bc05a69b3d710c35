//! `edgepod kubeconfig`: prints the admin kubeconfig the hub wrote to the data dir.
use std::path::Path;

use anyhow::Context;

pub fn run(data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join("kubeconfig");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: no kubeconfig yet (it is written when `edgepod up` or `edgepod hub` starts)",
            path.display()
        )
    })?;
    print!("{text}");
    Ok(())
}
