//! Request bodies with `Content-Encoding: zstd`, which Codex sends to a provider named "OpenAI"
//! when logged in with ChatGPT (protocol §2.2): decoding for the fake, encoding for tests.

use std::borrow::Cow;
use std::io::Read as _;

use ruzstd::decoding::StreamingDecoder;
use ruzstd::encoding::{compress_to_vec, CompressionLevel};

/// `bytes` as one zstd frame, the way Codex compresses a request body.
pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    compress_to_vec(bytes, CompressionLevel::Fastest)
}

/// The body with `encoding` undone; `Err` says why it cannot be read.
pub(super) fn decode<'a>(encoding: Option<&str>, body: &'a [u8]) -> Result<Cow<'a, [u8]>, String> {
    match encoding.map(str::trim) {
        None | Some("") => Ok(Cow::Borrowed(body)),
        Some(e) if e.eq_ignore_ascii_case("identity") => Ok(Cow::Borrowed(body)),
        Some(e) if e.eq_ignore_ascii_case("zstd") => unzstd(body).map(Cow::Owned),
        Some(other) => Err(format!("Unsupported Content-Encoding: {other}.")),
    }
}

/// Decodes every zstd frame of `body` (concatenated frames are one stream, as for `zstd -d`).
fn unzstd(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let invalid = |e: &dyn std::fmt::Display| format!("Could not decompress the zstd body: {e}");
    if body.is_empty() {
        return Err(invalid(&"empty body"));
    }
    let mut out = Vec::new();
    // Each pass consumes at least one frame header, so this ends with the input.
    while !body.is_empty() {
        let mut frame = StreamingDecoder::new(&mut body).map_err(|e| invalid(&e))?;
        frame.read_to_end(&mut out).map_err(|e| invalid(&e))?;
    }
    Ok(out)
}
