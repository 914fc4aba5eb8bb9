//! Feature flags change what the running system does, live: the catalog's and the orders'
//! flags (`catalog`, `orders`), the fault-injection drills through the real paths (`faults`),
//! and administrators' changes through `/admin/flags`, in one process and across processes
//! (`admin`).

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod catalog;
mod faults;
mod orders;

use serde_json::{Value, json};

/// The project's flag definitions.
pub fn project_flags() -> Value {
    serde_json::from_str(include_str!("../../../../config/flags.json")).expect("config/flags.json")
}

/// The project's flags with `flag` served as `variant` (its targeting kept).
pub fn flags_with(flag: &str, variant: &str) -> Value {
    let mut doc = project_flags();
    doc["flags"][flag]["defaultVariant"] = json!(variant);
    doc
}

/// The project's flags with `flag` served as `variant` to everyone: its targeting removed.
pub fn flags_for_everyone(flag: &str, variant: &str) -> Value {
    let mut doc = flags_with(flag, variant);
    doc["flags"][flag].as_object_mut().expect("a flag").remove("targeting");
    doc
}

/// A flag file in a directory of its own, removed when dropped.
pub struct FlagFile {
    dir: std::path::PathBuf,
    /// The file.
    pub path: std::path::PathBuf,
}

impl FlagFile {
    /// A file holding `doc`.
    pub fn new(doc: &Value) -> Self {
        let dir = std::env::temp_dir().join(format!("petstore-flags-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = Self { path: dir.join("flags.json"), dir };
        file.write(doc);
        file
    }

    /// Replaces the file's content (the services reload it).
    pub fn write(&self, doc: &Value) {
        std::fs::write(&self.path, doc.to_string()).expect("write the flag file");
    }

    /// The configuration (YAML) that points the services at this file.
    pub fn setting(&self) -> String {
        format!("flags: {{ file: \"{}\" }}", self.path.display())
    }
}

impl Drop for FlagFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
