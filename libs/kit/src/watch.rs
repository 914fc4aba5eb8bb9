//! Watching files for changes (inotify on Linux): what reloads the flag file and the
//! configuration files.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::Watcher as _;
use tokio_util::sync::CancellationToken;

/// Calls `on_change` whenever one of `files` changes (an edit in place, or an editor's rename
/// over it), until `shutdown`. The files' directories are watched, not the files: a rename
/// over a file would end a watch on the file itself. After a change the watcher waits
/// `settle` for the writer to finish; the events of that time make one call. Without files
/// nothing is watched.
///
/// A Kubernetes ConfigMap mounted as a directory changes differently: its files are symlinks
/// through `..data`, and an update swaps that symlink (`..data_tmp` renamed over it), so a
/// change of an entry whose name starts with `..data` counts as a change of every file.
pub(crate) fn on_change(
    files: &[PathBuf],
    settle: Duration,
    shutdown: &CancellationToken,
    mut on_change: impl FnMut() + Send + 'static,
) -> Result<(), String> {
    if files.is_empty() {
        return Ok(());
    }
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .map(|f| f.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf())
        .collect();
    dirs.sort();
    dirs.dedup();
    let names: Vec<OsString> = files.iter().filter_map(|f| f.file_name().map(ToOwned::to_owned)).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let shown = || dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && changes_content(&event.kind)
            && event.paths.iter().any(|p| p.file_name().is_some_and(|n| names.iter().any(|w| w == n) || swapped(n)))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", shown()))?;
    for dir in &dirs {
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    }
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let _watcher = watcher; // watches as long as this task lives
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = rx.recv() => if changed.is_none() { return },
            }
            // Let the writer finish: editors write in several steps.
            tokio::time::sleep(settle).await;
            while rx.try_recv().is_ok() {}
            on_change();
        }
    });
    Ok(())
}

/// Whether an event can change what a file holds. Opening and reading a file are events too,
/// and every process that reloads reads the file: reacting to reads would have processes
/// sharing a file (the compose deployment mounts one directory into every container) wake
/// each other up without end.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

/// Whether `name` is the symlink a ConfigMap update swaps (or its temporary twin).
fn swapped(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with("..data"))
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn reading_a_watched_file_is_no_change_and_writing_it_is() {
        let dir = std::env::temp_dir().join(format!("watch-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("settings.yaml");
        std::fs::write(&file, "a: 1\n").expect("write");
        let changes = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let counter = changes.clone();
        on_change(std::slice::from_ref(&file), Duration::from_millis(20), &shutdown, move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .expect("watch");

        for _ in 0..5 {
            std::fs::read_to_string(&file).expect("read");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(changes.load(Ordering::SeqCst), 0, "reads are no change");

        std::fs::write(&file, "a: 2\n").expect("write");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while changes.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(changes.load(Ordering::SeqCst) >= 1, "a write is a change");
        shutdown.cancel();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
