//! Byte scans over a token, sixteen bytes per step.
//!
//! Every request walks its token (hundreds of bytes) several times: is it visible ASCII, does
//! it hold a comma, how many dots, is it the cached one. Byte by byte, those walks were most
//! of the cache-hit path in V8; built for Wasm with SIMD (what the filter runs), each step
//! here tests sixteen bytes. Natively the plain loops below run instead, and `make unit-wasm`
//! runs these tests in V8 so that the SIMD code is what they check.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod imp {
    use core::arch::wasm32::*;

    const LANES: usize = 16;

    /// Calls `step` with each whole 16-byte block of `s`; returns the tail.
    #[inline(always)]
    fn blocks(s: &[u8], mut step: impl FnMut(v128) -> bool) -> Option<&[u8]> {
        let mut chunks = s.chunks_exact(LANES);
        for chunk in &mut chunks {
            // SAFETY: `chunk` is 16 bytes; v128_load reads 16 bytes, unaligned loads are fine.
            let v = unsafe { v128_load(chunk.as_ptr().cast::<v128>()) };
            if !step(v) {
                return None;
            }
        }
        Some(chunks.remainder())
    }

    pub fn visible_ascii(s: &[u8]) -> bool {
        let (low, high) = (u8x16_splat(0x21), u8x16_splat(0x7e));
        match blocks(s, |v| {
            !v128_any_true(v128_or(u8x16_lt(v, low), u8x16_gt(v, high)))
        }) {
            Some(tail) => super::scalar::visible_ascii(tail),
            None => false,
        }
    }

    pub fn ascii(s: &[u8]) -> bool {
        match blocks(s, |v| u8x16_bitmask(v) == 0) {
            Some(tail) => tail.is_ascii(),
            None => false,
        }
    }

    pub fn count(s: &[u8], byte: u8) -> usize {
        let needle = u8x16_splat(byte);
        let mut n = 0;
        let tail = blocks(s, |v| {
            n += u8x16_bitmask(u8x16_eq(v, needle)).count_ones() as usize;
            true
        });
        n + tail.map_or(0, |t| super::scalar::count(t, byte))
    }

    pub fn contains(s: &[u8], byte: u8) -> bool {
        let needle = u8x16_splat(byte);
        match blocks(s, |v| !v128_any_true(u8x16_eq(v, needle))) {
            Some(tail) => super::scalar::contains(tail, byte),
            None => true,
        }
    }

    pub fn same(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let (mut xs, mut ys) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        for (x, y) in (&mut xs).zip(&mut ys) {
            // SAFETY: `x` and `y` are 16 bytes each; unaligned loads are fine.
            let (vx, vy) = unsafe {
                (
                    v128_load(x.as_ptr().cast::<v128>()),
                    v128_load(y.as_ptr().cast::<v128>()),
                )
            };
            if v128_any_true(v128_xor(vx, vy)) {
                return false;
            }
        }
        xs.remainder() == ys.remainder()
    }
}

mod scalar {
    #[allow(dead_code)] // unused in the SIMD build apart from tails
    pub fn visible_ascii(s: &[u8]) -> bool {
        s.iter().all(|&b| (0x21..=0x7e).contains(&b))
    }

    #[allow(dead_code)]
    pub fn ascii(s: &[u8]) -> bool {
        s.is_ascii()
    }

    pub fn count(s: &[u8], byte: u8) -> usize {
        s.iter().filter(|&&b| b == byte).count()
    }

    pub fn contains(s: &[u8], byte: u8) -> bool {
        s.contains(&byte)
    }

    #[allow(dead_code)]
    pub fn same(a: &[u8], b: &[u8]) -> bool {
        a == b
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
use scalar as imp;

/// Every byte is visible ASCII (`!` to `~`): no space, no control, nothing above 0x7e.
pub fn visible_ascii(s: &[u8]) -> bool {
    imp::visible_ascii(s)
}

/// `std::str::from_utf8` with a fast path for all-ASCII input (header values, tokens): one
/// SIMD walk instead of the validator's.
pub fn utf8(s: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if imp::ascii(s) {
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(s) })
    } else {
        std::str::from_utf8(s)
    }
}

/// How many times `byte` occurs in `s`.
pub fn count(s: &[u8], byte: u8) -> usize {
    imp::count(s, byte)
}

/// Whether `byte` occurs in `s`.
pub fn contains(s: &[u8], byte: u8) -> bool {
    imp::contains(s, byte)
}

/// Whether `a` and `b` hold the same bytes.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    imp::same(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths around the 16-byte blocks, so that every function meets whole blocks, tails
    /// and both.
    const LENGTHS: [usize; 12] = [0, 1, 15, 16, 17, 31, 32, 33, 47, 64, 100, 400];

    fn text(len: usize) -> Vec<u8> {
        (0..len).map(|i| b'!' + (i % 94) as u8).collect()
    }

    #[test]
    fn visible_ascii_accepts_every_visible_byte_and_rejects_others_anywhere() {
        for len in LENGTHS {
            let s = text(len);
            assert!(visible_ascii(&s), "len {}", len);
            for at in 0..len {
                for bad in [0x00, 0x09, b' ', 0x7f, 0x80, 0xff] {
                    let mut t = s.clone();
                    t[at] = bad;
                    assert!(!visible_ascii(&t), "len {} byte {:#x} at {}", len, bad, at);
                }
            }
        }
    }

    #[test]
    fn utf8_answers_as_the_standard_validator() {
        for len in LENGTHS {
            let mut s = vec![b' '; len];
            s.iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = (i % 128) as u8);
            assert_eq!(utf8(&s).map(str::len), Ok(len), "len {}", len);
            for at in 0..len {
                let mut t = s.clone();
                t[at] = 0xff;
                assert!(utf8(&t).is_err(), "len {} 0xff at {}", len, at);
                // Valid UTF-8 beyond ASCII takes the standard path.
                let mut u = s.clone();
                u.splice(at..at + 1, "é".bytes());
                assert_eq!(utf8(&u), std::str::from_utf8(&u), "len {} é at {}", len, at);
                assert!(utf8(&u).is_ok());
            }
        }
    }

    #[test]
    fn count_and_contains_find_the_byte_in_blocks_and_tails() {
        for len in LENGTHS {
            let mut s = vec![b'a'; len];
            assert_eq!(count(&s, b'.'), 0);
            assert!(!contains(&s, b'.'));
            for at in (0..len).step_by(7) {
                s[at] = b'.';
            }
            let expected = (0..len).step_by(7).count();
            assert_eq!(count(&s, b'.'), expected, "len {}", len);
            assert_eq!(contains(&s, b'.'), expected > 0, "len {}", len);
            if len > 0 {
                let mut last = vec![b'a'; len];
                last[len - 1] = b',';
                assert!(contains(&last, b','), "len {}", len);
                assert_eq!(count(&last, b','), 1);
            }
        }
    }

    #[test]
    fn same_compares_length_and_every_byte() {
        for len in LENGTHS {
            let s = text(len);
            assert!(same(&s, &s.clone()));
            assert!(!same(&s, &text(len + 1)));
            for at in 0..len {
                let mut t = s.clone();
                t[at] ^= 1;
                assert!(!same(&s, &t), "len {} differs at {}", len, at);
            }
        }
    }
}
