//! `--state FILE`: counters saved as JSON, written atomically (a temporary file in the same
//! directory, then rename) and loaded at start. Counters naming a service, application or
//! metric the data file no longer has are dropped on load. The call counts (`calls`, added
//! later in version 1, so optional) are kept whole.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::Data;
use crate::periods::Period;
use crate::store::{Calls, Counter, Key, Store};
use crate::ControlError;

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    counters: Vec<Entry>,
    #[serde(default)]
    calls: Calls,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    service: String,
    app: String,
    metric: String,
    period: String,
    /// Window start, UNIX seconds.
    start: i64,
    value: u64,
}

/// Loads counters from `path` into `store`; a missing file is an empty state.
pub fn load(path: &Path, data: &Data, store: &mut Store) -> Result<(), ControlError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ControlError::ReadState {
                path: path.to_owned(),
                source,
            })
        }
    };
    let file: StateFile =
        serde_json::from_slice(&bytes).map_err(|source| ControlError::InvalidState {
            path: path.to_owned(),
            source,
        })?;
    store.calls = file.calls;
    for e in file.counters {
        let Some((si, svc)) = data
            .services
            .iter()
            .enumerate()
            .find(|(_, s)| s.id == e.service)
        else {
            continue;
        };
        let (Some(&app), Some(&metric), Some(period)) = (
            svc.app_index.get(&e.app),
            svc.metric_index.get(&e.metric),
            Period::parse(&e.period),
        ) else {
            continue;
        };
        store.restore(
            Key {
                service: si,
                app,
                metric,
                period,
            },
            Counter {
                start: e.start,
                value: e.value,
            },
        );
    }
    Ok(())
}

/// The state as bytes (taken under the store lock; written outside it).
pub fn snapshot(data: &Data, store: &Store) -> Vec<u8> {
    let mut counters: Vec<Entry> = store
        .all()
        .filter_map(|(k, c)| {
            let svc = data.services.get(k.service)?;
            Some(Entry {
                service: svc.id.clone(),
                app: svc.apps.get(k.app)?.id.clone(),
                metric: svc.metrics.get(k.metric)?.name.clone(),
                period: k.period.name().to_owned(),
                start: c.start,
                value: c.value,
            })
        })
        .collect();
    counters.sort_by(|a, b| {
        (&a.service, &a.app, &a.metric, &a.period).cmp(&(&b.service, &b.app, &b.metric, &b.period))
    });
    serde_json::to_vec_pretty(&StateFile {
        version: 1,
        counters,
        calls: store.calls,
    })
    .unwrap_or_default()
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
