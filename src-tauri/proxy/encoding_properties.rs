//! Properties of zstd request bodies, which come from any local client: random, cut and
//! corrupted frames never panic, nothing decodes past the limit, bombs are refused by size,
//! and real frames come back byte for byte.

use axum::http::HeaderValue;
use proptest::prelude::*;

use super::*;

fn config() -> ProptestConfig {
    crate::properties::seeded(256)
}

const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn zstd_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    h
}

fn compress(data: &[u8], uncompressed: bool) -> Vec<u8> {
    let level = if uncompressed {
        ruzstd::encoding::CompressionLevel::Uncompressed
    } else {
        ruzstd::encoding::CompressionLevel::Fastest
    };
    ruzstd::encoding::compress_to_vec(data, level)
}

/// Decodes and checks what holds for every input: no panic, and an accepted body is
/// never longer than the limit.
fn decode_within(body: &[u8], limit: usize) -> Result<Bytes, ProxyError> {
    let result = decode(&zstd_headers(), &Bytes::copy_from_slice(body), limit);
    if let Ok(plain) = &result {
        assert!(
            plain.len() <= limit,
            "{} bytes past a limit of {limit}",
            plain.len()
        );
    }
    result
}

/// Request bodies as Codex sends them (JSON), or any bytes.
fn plain_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "\\PC{0,300}".prop_map(|s| format!(r#"{{"model":"gpt-5.5","input":{s:?}}}"#).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..600),
        (any::<u8>(), 0usize..4000).prop_map(|(b, n)| vec![b; n]),
    ]
}

/// A frame of RLE blocks (RFC 8878 §3.1.1.2): 4 bytes of input give up to 128 KiB of
/// output, and the header declares no content size, so only the decoded bytes can tell.
fn rle_bomb(blocks: &[(u8, u32)]) -> Vec<u8> {
    let mut frame = MAGIC.to_vec();
    // No content size, not single segment, no checksum; window 1 MiB (exponent 10).
    frame.extend([0x00, 10 << 3]);
    for (i, (byte, size)) in blocks.iter().enumerate() {
        let last = u32::from(i + 1 == blocks.len());
        let block_header = last | (1 << 1) | (size << 3);
        frame.extend(&block_header.to_le_bytes()[..3]);
        frame.push(*byte);
    }
    frame
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes, with or without the magic number in front: an answer, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        magic in any::<bool>(),
        limit in 1usize..(1 << 20),
    ) {
        let body = if magic { [&MAGIC[..], &bytes].concat() } else { bytes };
        let _ = decode_within(&body, limit);
    }

    /// A real frame written back exactly, and with the limit one byte short, refused.
    #[test]
    fn valid_frames_round_trip(data in plain_body(), uncompressed in any::<bool>()) {
        let frame = compress(&data, uncompressed);
        let decoded = decode_within(&frame, data.len().max(1)).ok();
        prop_assert_eq!(decoded.as_deref(), Some(&data[..]));
        if !data.is_empty() {
            let e = decode_within(&frame, data.len() - 1).unwrap_err();
            prop_assert_eq!(e.code(), "body_too_large", "{}", e);
        }
    }

    /// A frame cut anywhere, or with a byte changed: no panic, and what a cut frame gives is
    /// at most the start of the original.
    #[test]
    fn cut_and_corrupted_frames_never_panic(
        data in plain_body(),
        uncompressed in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let frame = compress(&data, uncompressed);
        let limit = data.len().max(1);
        let cut_frame = &frame[..cut.index(frame.len())];
        if let Ok(plain) = decode_within(cut_frame, limit) {
            prop_assert!(data.starts_with(&plain), "a cut frame gave bytes that were not sent");
        }
        let mut corrupted = frame.clone();
        let at = flip.index(corrupted.len());
        corrupted[at] ^= mask;
        let _ = decode_within(&corrupted, limit);
    }

    /// Highly compressed bodies with no declared size: refused as too large exactly when
    /// they decode past the limit, read in full otherwise.
    #[test]
    fn bombs_are_refused_by_their_decoded_size(
        blocks in prop::collection::vec((any::<u8>(), 1u32..=32 * 1024), 1..12),
        limit in 1usize..(256 * 1024),
    ) {
        let total: usize = blocks.iter().map(|(_, size)| *size as usize).sum();
        let result = decode_within(&rle_bomb(&blocks), limit);
        if total > limit {
            let e = result.unwrap_err();
            prop_assert_eq!(e.code(), "body_too_large", "{}", e);
        } else {
            let expected: Vec<u8> = blocks
                .iter()
                .flat_map(|(byte, size)| std::iter::repeat_n(*byte, *size as usize))
                .collect();
            let plain = result.ok();
            prop_assert_eq!(plain.as_deref(), Some(&expected[..]));
        }
    }

    /// A header that declares more content than the limit, or a window past what any limit
    /// allows, is refused by size before a byte is decoded.
    #[test]
    fn declared_sizes_past_the_limit_are_refused_before_decoding(
        single_segment in any::<bool>(),
        size_flag in 0u8..4,
        window_byte in any::<u8>(),
        declared in any::<u64>(),
        rest in prop::collection::vec(any::<u8>(), 0..64),
        limit in 1usize..(1 << 20),
    ) {
        let size_bytes = match (size_flag, single_segment) {
            (0, true) => 1,
            (0, false) => 0,
            (1, _) => 2,
            (2, _) => 4,
            _ => 8,
        };
        let declared = if size_bytes == 8 { declared } else { declared % (1u64 << (8 * size_bytes)) };
        let content = match size_bytes {
            0 => None,
            2 => Some(declared + 256),
            _ => Some(declared),
        };
        let window = if single_segment {
            content.unwrap_or(0)
        } else {
            let base = 1u64 << (10 + u64::from(window_byte >> 3));
            base + base / 8 * u64::from(window_byte & 7)
        };
        let mut frame = MAGIC.to_vec();
        frame.push((size_flag << 6) | (u8::from(single_segment) << 5));
        if !single_segment {
            frame.push(window_byte);
        }
        frame.extend(&declared.to_le_bytes()[..size_bytes]);
        frame.extend(&rest);
        let result = decode_within(&frame, limit);
        let too_large = content.is_some_and(|c| c > limit as u64)
            || window > (limit as u64).max(MIN_WINDOW_ALLOWED);
        if too_large {
            let e = result.unwrap_err();
            prop_assert_eq!(e.code(), "body_too_large", "{}", e);
        }
    }
}
