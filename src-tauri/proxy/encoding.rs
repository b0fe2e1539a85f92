//! Request bodies with `Content-Encoding: zstd`: Codex compresses them when its provider is
//! named "OpenAI" and the user is logged in with ChatGPT (protocol §2.2). The router reads
//! them to route, and forwards the compressed bytes as they came.

use std::io::Read;

use axum::http::{header, HeaderMap};
use bytes::Bytes;

use super::error::ProxyError;

/// The body as JSON bytes: itself when not encoded, else decoded, never past `limit` bytes
/// (a small zstd frame can claim gigabytes).
pub fn decode(headers: &HeaderMap, body: &Bytes, limit: usize) -> Result<Bytes, ProxyError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(body.clone()),
        Some("zstd") => zstd(body, limit),
        Some(other) => Err(ProxyError::UnknownEncoding(other.to_string())),
    }
}

/// The least window a decoder may need, whatever the body limit: zstd's level 3 (what Codex
/// uses) keeps up to 2 MiB, and small limits must not refuse ordinary bodies.
const MIN_WINDOW_ALLOWED: u64 = 8 << 20;

fn zstd(body: &[u8], limit: usize) -> Result<Bytes, ProxyError> {
    let bad = |reason: String| ProxyError::BadEncoding {
        encoding: "zstd".to_string(),
        reason,
    };
    // The decoder reserves the frame's window before it produces a byte, and a few bytes of
    // header can ask for gigabytes: refuse those before decoding.
    let frame = FrameSizes::read(body).map_err(bad)?;
    let limit64 = limit as u64;
    if frame.content.is_some_and(|c| c > limit64) || frame.window > limit64.max(MIN_WINDOW_ALLOWED)
    {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let decoder = ruzstd::decoding::StreamingDecoder::new(body).map_err(|e| bad(e.to_string()))?;
    let mut plain = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    // One byte past the limit tells "too large" from "exactly the limit".
    decoder
        .take(limit64.saturating_add(1))
        .read_to_end(&mut plain)
        .map_err(|e| bad(e.to_string()))?;
    if plain.len() > limit {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    Ok(Bytes::from(plain))
}

/// What a zstd frame header declares (RFC 8878 §3.1.1.1): the window the decoder must keep,
/// and the decoded size when given.
struct FrameSizes {
    window: u64,
    content: Option<u64>,
}

impl FrameSizes {
    fn read(body: &[u8]) -> Result<FrameSizes, String> {
        const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
        if body.get(..4) != Some(&MAGIC[..]) {
            return Err("not a zstd frame (wrong magic number)".to_string());
        }
        let short = || "the zstd frame header is cut short".to_string();
        let descriptor = *body.get(4).ok_or_else(short)?;
        let single_segment = descriptor & 0x20 != 0;
        let mut at = 5;
        let window_descriptor = if single_segment {
            None
        } else {
            at += 1;
            Some(*body.get(5).ok_or_else(short)?)
        };
        at += [0, 1, 2, 4][usize::from(descriptor & 0x03)];
        let size_bytes = match descriptor >> 6 {
            0 if single_segment => 1,
            0 => 0,
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let field = body.get(at..at + size_bytes).ok_or_else(short)?;
        let mut value = [0u8; 8];
        value[..size_bytes].copy_from_slice(field);
        let raw = u64::from_le_bytes(value);
        let content = match size_bytes {
            0 => None,
            2 => Some(raw + 256),
            _ => Some(raw),
        };
        let window = match window_descriptor {
            // A single segment is decoded in one go: its window is its content.
            None => content.unwrap_or(0),
            Some(w) => {
                let base = 1u64 << (10 + u64::from(w >> 3));
                base + (base / 8) * u64::from(w & 0x07)
            }
        };
        Ok(FrameSizes { window, content })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn zstd_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        h
    }

    fn compress(data: &[u8]) -> Bytes {
        let level = ruzstd::encoding::CompressionLevel::Fastest;
        Bytes::from(ruzstd::encoding::compress_to_vec(data, level))
    }

    #[test]
    fn zstd_bodies_are_read_and_plain_ones_pass() {
        let json = br#"{"model":"gpt-5.5","prompt_cache_key":"s1"}"#;
        let decoded = decode(&zstd_headers(), &compress(json), 1 << 20).unwrap();
        assert_eq!(&decoded[..], &json[..]);
        let plain = Bytes::from_static(json);
        assert_eq!(decode(&HeaderMap::new(), &plain, 1 << 20).unwrap(), plain);
    }

    #[test]
    fn garbage_bombs_and_unknown_encodings_are_refused_by_name() {
        let garbage = Bytes::from_static(b"{\"model\":\"not zstd at all\"}");
        let e = decode(&zstd_headers(), &garbage, 1 << 20).unwrap_err();
        assert_eq!(e.code(), "bad_content_encoding", "{e}");
        // 8 MiB of zeros compresses to a few hundred bytes.
        let bomb = compress(&vec![0u8; 8 << 20]);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let e = decode(&zstd_headers(), &bomb, 1 << 20).unwrap_err();
        assert_eq!(e.code(), "body_too_large", "{e}");
        let mut gzip = HeaderMap::new();
        gzip.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let e = decode(&gzip, &garbage, 1 << 20).unwrap_err();
        assert_eq!(e.code(), "unsupported_content_encoding", "{e}");
    }

    /// A frame header alone, asking for a huge window or content: refused before decoding.
    #[test]
    fn a_header_asking_for_a_huge_window_is_refused_before_anything_is_decoded() {
        let magic = [0x28, 0xb5, 0x2f, 0xfd];
        // No single segment, no size: window descriptor exponent 20 → 1 GiB (2^30).
        let mut window = magic.to_vec();
        window.extend([0x00, 20 << 3]);
        window.extend([0u8; 16]);
        let e = decode(&zstd_headers(), &Bytes::from(window), 1 << 20).unwrap_err();
        assert_eq!(e.code(), "body_too_large", "{e}");
        // Single segment with an 8-byte content size of 1 TiB.
        let mut content = magic.to_vec();
        content.push(0xe0);
        content.extend((1u64 << 40).to_le_bytes());
        content.extend([0u8; 16]);
        let e = decode(&zstd_headers(), &Bytes::from(content), 1 << 20).unwrap_err();
        assert_eq!(e.code(), "body_too_large", "{e}");
        // Real frames of small bodies pass the check.
        let json = br#"{"model":"gpt-5.5"}"#;
        let sizes = FrameSizes::read(&compress(json)).unwrap();
        assert!(sizes.window <= MIN_WINDOW_ALLOWED, "{}", sizes.window);
    }
}

#[cfg(test)]
#[path = "encoding_properties.rs"]
mod properties;
