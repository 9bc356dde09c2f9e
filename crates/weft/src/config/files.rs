//! Files a config names (secrets, certificates, keys), read within limits.

/// A file the config names (a secret, a certificate), read with care: only a regular file
/// (opening a FIFO would wait for a writer, a device would never end) of at most `max` bytes.
/// The error says why, never what the file holds.
pub fn read_bounded(path: &str, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.kind().to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let file = std::fs::File::open(path).map_err(|e| e.kind().to_string())?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.kind().to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes)
}
