//! `edgepod image import|ls|rm|prune|pull`: the local image store, no agent needed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::image::ImageStore;

use super::get::{age, print_rows};

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import an OCI archive (skopeo's oci-archive:) or a docker-archive tar.
    Import { files: Vec<PathBuf> },
    /// List images.
    #[command(alias = "list")]
    Ls,
    /// Remove images by reference or ID; blobs and layers no image uses are deleted.
    #[command(alias = "remove")]
    Rm { references: Vec<String> },
    /// Remove every image no pod of this node uses (as `crictl rmi --prune`).
    Prune,
    /// Pull images from their registries (or the mirrors registries.yaml names).
    Pull(super::image_pull::PullArgs),
}

pub fn run(data_dir: &Path, cmd: ImageCommand) -> anyhow::Result<()> {
    let root = data_dir.join("images");
    let images = ImageStore::open(&root)
        .with_context(|| format!("opening the image store {}", root.display()))?;
    match cmd {
        ImageCommand::Pull(args) => return super::image_pull::run(images, args),
        ImageCommand::Import { files } => {
            for f in files {
                let records = images
                    .import(&f)
                    .with_context(|| format!("importing {}", f.display()))?;
                for r in records {
                    println!("imported {} ({})", r.reference, r.digest.as_str());
                }
            }
        }
        ImageCommand::Ls => {
            let rows: Vec<Vec<String>> = images
                .list()?
                .iter()
                .map(|r| {
                    let (repo, tag) = split_reference(&r.reference);
                    vec![
                        repo,
                        tag,
                        r.id().hex().chars().take(12).collect(),
                        age(r.created_at()),
                        human_size(r.size),
                    ]
                })
                .collect();
            print_rows(&["IMAGE", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
        }
        ImageCommand::Rm { references } => {
            for r in references {
                images.remove(&r).with_context(|| format!("removing {r}"))?;
                println!("deleted {r}");
            }
        }
        ImageCommand::Prune => {
            // Every pod the node's store holds counts, running or not: a pod about to start
            // needs its image as much as a running one.
            let store = crate::store::Store::open_in(data_dir)
                .with_context(|| format!("opening the store in {}", data_dir.display()))?;
            let pods = store.list_as::<k8s_openapi::api::core::v1::Pod>("Pod", None, None)?;
            let in_use = images.ids_of(pods.iter().flat_map(crate::agent::image_gc::pod_images))?;
            let before = crate::image::space::FsUsage::of(images.root())?;
            let removed = images.prune(&in_use)?;
            let after = crate::image::space::FsUsage::of(images.root())?;
            for id in &removed {
                println!("deleted {id}");
            }
            println!(
                "{} images removed, {} freed",
                removed.len(),
                human_size(after.available.saturating_sub(before.available))
            );
        }
    }
    Ok(())
}

fn split_reference(r: &str) -> (String, String) {
    if let Some((repo, digest)) = r.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    match r.rfind(':') {
        Some(i) if !r[i..].contains('/') => (r[..i].to_string(), r[i + 1..].to_string()),
        _ => (r.to_string(), "<none>".to_string()),
    }
}

pub(super) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}{}", UNITS[u])
    }
}
