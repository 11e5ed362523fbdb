//! Shamir secret sharing over GF(2^8) (the AES field, polynomial x^8 + x^4 +
//! x^3 + x + 1), byte by byte: each byte of the secret is the constant term
//! of a random polynomial of degree k − 1; share i holds the polynomials'
//! values at x = i (1..=n). Any k shares give the secret back by Lagrange
//! interpolation at 0; fewer give a value independent of it.

use zeroize::Zeroizing;

fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let carry = a & 0x80;
        a <<= 1;
        if carry != 0 {
            a ^= 0x1B;
        }
        b >>= 1;
    }
    p
}

fn inv(a: u8) -> u8 {
    // a^254 = a^-1 in GF(2^8); a ≠ 0.
    let mut r = 1u8;
    let mut base = a;
    let mut e = 254u8;
    while e != 0 {
        if e & 1 != 0 {
            r = mul(r, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    r
}

/// Split `secret` into `n` shares, any `k` of which recover it
/// (1 ≤ k ≤ n ≤ 255). Share i (1-based) is `(i, bytes)`.
pub fn split(secret: &[u8], k: u8, n: u8) -> Vec<(u8, Zeroizing<Vec<u8>>)> {
    assert!(k >= 1 && k <= n, "threshold out of range");
    let mut coeffs = Zeroizing::new(vec![0u8; secret.len() * (k as usize - 1)]);
    openssl::rand::rand_bytes(&mut coeffs).expect("RNG");
    (1..=n)
        .map(|x| {
            let ys = secret
                .iter()
                .enumerate()
                .map(|(j, s)| {
                    // Horner: ((c_{k-1} x + c_{k-2}) x + ...) x + s
                    let c = &coeffs[j * (k as usize - 1)..(j + 1) * (k as usize - 1)];
                    let mut y = 0u8;
                    for a in c.iter().rev() {
                        y = mul(y, x) ^ a;
                    }
                    mul(y, x) ^ s
                })
                .collect();
            (x, Zeroizing::new(ys))
        })
        .collect()
}

/// Recover the secret from shares `(x, bytes)` (distinct non-zero x, equal
/// lengths). With fewer shares than the threshold the result is garbage:
/// the caller checks it (domain check value).
pub fn combine(shares: &[(u8, &[u8])]) -> Option<Zeroizing<Vec<u8>>> {
    let len = shares.first()?.1.len();
    if shares.iter().any(|(x, s)| *x == 0 || s.len() != len) {
        return None;
    }
    for (i, (a, _)) in shares.iter().enumerate() {
        if shares[..i].iter().any(|(b, _)| a == b) {
            return None;
        }
    }
    let mut out = Zeroizing::new(vec![0u8; len]);
    for (i, (xi, yi)) in shares.iter().enumerate() {
        // Lagrange basis at 0: prod_{j≠i} x_j / (x_j − x_i); − is ^ here.
        let mut num = 1u8;
        let mut den = 1u8;
        for (j, (xj, _)) in shares.iter().enumerate() {
            if i != j {
                num = mul(num, *xj);
                den = mul(den, xj ^ xi);
            }
        }
        let l = mul(num, inv(den));
        for (o, y) in out.iter_mut().zip(yi.iter()) {
            *o ^= mul(*y, l);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_inverse() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
        }
    }

    #[test]
    fn any_k_of_n_recover_and_fewer_do_not() {
        let secret = [0x42u8; 32];
        let shares = split(&secret, 3, 5);
        let pick =
            |ix: &[usize]| -> Vec<(u8, &[u8])> { ix.iter().map(|i| (shares[*i].0, &shares[*i].1[..])).collect() };
        for ix in [[0, 1, 2], [0, 2, 4], [4, 3, 1], [1, 3, 4]] {
            assert_eq!(&combine(&pick(&ix)).unwrap()[..], &secret[..]);
        }
        assert_ne!(&combine(&pick(&[0, 1])).unwrap()[..], &secret[..]);
        assert!(combine(&pick(&[0, 0, 1])).is_none());
        let all: Vec<usize> = (0..5).collect();
        assert_eq!(&combine(&pick(&all)).unwrap()[..], &secret[..]);
    }
}
