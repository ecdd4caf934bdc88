//! The run folder, claimed before training: created, locked against a
//! second run, proven writable, and cleared of the temporary files a killed
//! run left.

use super::Files;
use crate::runtime::Error;
use crate::runtime::checkpoint::{remove_stale_temps, temp_path};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::Path;

/// Claims `dir` for a run writing `files`: the lock it returns is held
/// until it is dropped, or the process ends, however it ends.
pub fn claim(dir: &Path, files: &Files) -> Result<File, Error> {
    let shown = dir.display();
    let unwritable = |e: std::io::Error| {
        Error::Message(format!(
            "cannot write to the run folder `{shown}`: {e}\n  = help: give the run a folder it can write to with --out"
        ))
    };
    fs::create_dir_all(dir).map_err(unwritable)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&files.lock)
        .map_err(unwritable)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(Error::Message(format!(
                "another cnnc run is writing to `{shown}` (it holds `{}`)\n  = help: wait for it to end, or give this \
                 run another folder with --out",
                files.lock.display()
            )));
        }
        Err(TryLockError::Error(e)) => {
            return Err(Error::Message(format!(
                "cannot lock `{}`: {e}\n  = help: the file system may not support locks; give the run a local \
                 folder with --out",
                files.lock.display()
            )));
        }
    }
    // The lock file may exist from an earlier run: creating a file is what
    // the run's writes need, so it is tried now, not after the first epoch.
    let probe = dir.join("probe");
    let temp = temp_path(dir, OsStr::new("probe"));
    File::create(&temp).map_err(unwritable)?;
    fs::remove_file(&temp).map_err(unwritable)?;
    for path in [
        &files.checkpoint,
        &files.weights,
        &files.best,
        &files.metrics,
        &files.plot,
        &probe,
    ] {
        remove_stale_temps(path)?;
    }
    Ok(lock)
}
