//! Opening model files, which come from strangers: only regular files are opened (a FIFO or
//! a device in a model's place would block or never end), and whole reads stop at a cap.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::MAX_JSON_BYTES;
use crate::error::{Error, Result};

/// Opens `path` for reading if it is a regular file (symbolic links followed); anything
/// else is an `InvalidInput` error, before the open that could block.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let not_regular = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (glim reads model files only from regular files)",
        )
    };
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = File::open(path)?;
    // Swapped between the two looks: still refused.
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// Reads the regular file `path` whole, refusing one over `max` bytes. `Ok(None)` when it
/// does not exist.
pub fn read_capped(path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    let cannot = |e: std::io::Error| Error::Invalid(format!("cannot read {}: {e}", path.display()));
    let file = match open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cannot(e)),
    };
    let too_big = || {
        Error::Invalid(format!(
            "{}: more than the {max} bytes glim reads from such a file",
            path.display()
        ))
    };
    let len = file.metadata().map_err(cannot)?.len();
    if len > max {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    Ok(Some(bytes))
}

/// [`read_capped`] at [`MAX_JSON_BYTES`], for a file that must exist.
pub fn read_json_file(path: &Path) -> Result<Vec<u8>> {
    read_capped(path, MAX_JSON_BYTES)?
        .ok_or_else(|| Error::Invalid(format!("{} does not exist", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read_and_only_up_to_the_cap() {
        let dir = std::env::temp_dir().join(format!("glim-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.json");
        std::fs::write(&file, b"{\"a\": 1}").unwrap();
        assert_eq!(read_capped(&file, 8).unwrap().unwrap(), b"{\"a\": 1}");
        let e = read_capped(&file, 7).unwrap_err().to_string();
        assert!(e.contains("more than the 7 bytes"), "{e}");
        assert!(read_capped(&dir.join("missing"), 8).unwrap().is_none());
        let e = read_capped(&dir, 8).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        #[cfg(unix)]
        {
            // A FIFO would block a plain open until somebody writes to it.
            let fifo = dir.join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            if made.is_ok_and(|s| s.success()) {
                let e = read_capped(&fifo, 8).unwrap_err().to_string();
                assert!(e.contains("not a regular file"), "{e}");
                assert!(open_regular(&fifo).is_err());
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
