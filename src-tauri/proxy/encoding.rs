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

fn zstd(body: &[u8], limit: usize) -> Result<Bytes, ProxyError> {
    let bad = |reason: String| ProxyError::BadEncoding {
        encoding: "zstd".to_string(),
        reason,
    };
    let decoder = ruzstd::decoding::StreamingDecoder::new(body).map_err(|e| bad(e.to_string()))?;
    let mut plain = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    // One byte past the limit tells "too large" from "exactly the limit".
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| bad(e.to_string()))?;
    if plain.len() > limit {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    Ok(Bytes::from(plain))
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
}
