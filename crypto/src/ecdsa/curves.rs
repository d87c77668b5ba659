//! The NIST curves JOSE uses (FIPS 186-4 D.1.2), all of the form y^2 = x^3 - 3x + b.

use super::field::{bit_length, from_hex, neg_inv, r_squared, Limbs};
use super::point::CombTable;
use std::sync::OnceLock;

/// A curve's constants, with `L` 32-bit limbs per number. Each curve is its own type so the
/// arithmetic is compiled for its constants.
pub trait CurveParams<const L: usize>: Sized + 'static {
    /// Field prime, group order, curve constant and base point.
    const P: Limbs<L>;
    const N: Limbs<L>;
    const B: Limbs<L>;
    const GX: Limbs<L>;
    const GY: Limbs<L>;
    /// Bytes of an encoded coordinate or signature half.
    const BYTES: usize;
    /// Bits of a comb window: tables hold 2^(WINDOW-1) points per window.
    const WINDOW: usize;
    const P_INV: u32 = neg_inv(Self::P[0]);
    const N_INV: u32 = neg_inv(Self::N[0]);
    const R2_P: Limbs<L> = r_squared(&Self::P);
    const R2_N: Limbs<L> = r_squared(&Self::N);
    const N_BITS: usize = bit_length(&Self::N);

    /// G's comb table, built on first use and kept for the VM's life (one static per curve:
    /// a generic function cannot own one).
    fn generator_table() -> Option<&'static CombTable<Self, L>>;

    /// The message digest as an integer below 2^(bits of n) (FIPS 186-4 6.4: the leftmost
    /// bits of the hash; SHA-512's 512 bits are already fewer than P-521's 521).
    fn digest(message: &[u8]) -> Limbs<L>;
}

fn digest_limbs<const L: usize>(hash: &[u8]) -> Limbs<L> {
    super::field::from_be_bytes(hash).unwrap_or([0; L])
}

fn generator_table_in<C: CurveParams<L>, const L: usize>(
    cell: &'static OnceLock<Option<CombTable<C, L>>>,
) -> Option<&'static CombTable<C, L>> {
    cell.get_or_init(|| super::point::Affine::generator().map(|g| CombTable::new(&g)))
        .as_ref()
}

pub struct P256;
pub struct P384;
pub struct P521;

impl CurveParams<8> for P256 {
    const P: Limbs<8> =
        from_hex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
    const N: Limbs<8> =
        from_hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    const B: Limbs<8> =
        from_hex("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b");
    const GX: Limbs<8> =
        from_hex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
    const GY: Limbs<8> =
        from_hex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");
    const BYTES: usize = 32;
    const WINDOW: usize = 7;

    fn generator_table() -> Option<&'static CombTable<Self, 8>> {
        static TABLE: OnceLock<Option<CombTable<P256, 8>>> = OnceLock::new();
        generator_table_in(&TABLE)
    }

    fn digest(message: &[u8]) -> Limbs<8> {
        digest_limbs(&hmac_sha256::Hash::hash(message))
    }
}

impl CurveParams<12> for P384 {
    const P: Limbs<12> = from_hex(
        "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff",
    );
    const N: Limbs<12> = from_hex(
        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    );
    const B: Limbs<12> = from_hex(
        "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
    );
    const GX: Limbs<12> = from_hex(
        "aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7",
    );
    const GY: Limbs<12> = from_hex(
        "3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5f",
    );
    const BYTES: usize = 48;
    const WINDOW: usize = 6;

    fn generator_table() -> Option<&'static CombTable<Self, 12>> {
        static TABLE: OnceLock<Option<CombTable<P384, 12>>> = OnceLock::new();
        generator_table_in(&TABLE)
    }

    fn digest(message: &[u8]) -> Limbs<12> {
        digest_limbs(&hmac_sha512::sha384::Hash::hash(message))
    }
}

impl CurveParams<17> for P521 {
    const P: Limbs<17> = from_hex(
        "1ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    );
    const N: Limbs<17> = from_hex(
        "1fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409",
    );
    const B: Limbs<17> = from_hex(
        "051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00",
    );
    const GX: Limbs<17> = from_hex(
        "0c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d3dbaa14b5e77efe75928fe1dc127a2ffa8de3348b3c1856a429bf97e7e31c2e5bd66",
    );
    const GY: Limbs<17> = from_hex(
        "11839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e662c97ee72995ef42640c550b9013fad0761353c7086a272c24088be94769fd16650",
    );
    const BYTES: usize = 66;
    const WINDOW: usize = 5;

    fn generator_table() -> Option<&'static CombTable<Self, 17>> {
        static TABLE: OnceLock<Option<CombTable<P521, 17>>> = OnceLock::new();
        generator_table_in(&TABLE)
    }

    fn digest(message: &[u8]) -> Limbs<17> {
        digest_limbs(&hmac_sha512::Hash::hash(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_have_the_standard_bit_lengths() {
        assert_eq!(P256::N_BITS, 256);
        assert_eq!(P384::N_BITS, 384);
        assert_eq!(P521::N_BITS, 521);
    }

    #[test]
    fn generators_are_on_their_curves() {
        assert!(P256::generator_table().is_some());
        assert!(P384::generator_table().is_some());
        assert!(P521::generator_table().is_some());
    }
}
