//! Reading whole files without trusting them: regular files only, and
//! never more than a stated number of bytes.

use std::path::Path;

/// Reads a whole regular file of at most `limit` bytes. Anything else (a
/// folder, a device, a FIFO, a bigger file) is an error of kind
/// `InvalidInput` that says what was expected.
pub fn read_bounded(path: &Path, what: &str, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    // Looked at before opening: opening a FIFO would wait for a writer.
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(Error::from(ErrorKind::IsADirectory));
    }
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("not a regular file; {what} is needed"),
        ));
    }
    if meta.len() > limit {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} bytes, more than the {limit} bytes {what} may have", meta.len()),
        ));
    }
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // `take`: the file may grow while it is read.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("more than the {limit} bytes {what} may have"),
        ));
    }
    Ok(bytes)
}
