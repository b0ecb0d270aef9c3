//! Reading the text files users name, safely: bounded, regular, UTF-8.

/// Reads a text file that a user names (an experiment, a session): it must be a regular file
/// (a FIFO would block, `/dev/zero` never ends) of at most `max` bytes, in UTF-8 (a byte order
/// mark is allowed). `what` names the kind of file in messages ("an experiment").
pub fn read_text_file(path: &std::path::Path, max: u64, what: &str) -> Result<String, String> {
    use std::io::Read;
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read {what} {shown}: {e}");
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if let Some(kind) = crate::gguf::not_a_regular_file(&meta) {
        return Err(format!("{shown} is {kind}, not {what} file"));
    }
    let too_big = || {
        format!(
            "{shown} is larger than {} MiB, too large for {what} file",
            max >> 20
        )
    };
    if meta.len() > max {
        return Err(too_big());
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    let mut text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{shown} is not UTF-8 text (invalid byte at {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..3);
    }
    Ok(text)
}
