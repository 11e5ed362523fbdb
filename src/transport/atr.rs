//! Answer-to-reset parsing: just enough to find the historical bytes and the
//! card capabilities (ISO 7816-4 8.1.1.2.7) that say whether the card takes
//! extended-length APDUs and command chaining.

/// Historical bytes of an ATR, if its structure is well formed.
pub fn historical_bytes(atr: &[u8]) -> Option<&[u8]> {
    let t0 = *atr.get(1)?;
    let k = (t0 & 0x0F) as usize;
    let mut y = t0 >> 4;
    let mut i = 2usize;
    loop {
        let mut td = None;
        for (bit, is_td) in [(0x1, false), (0x2, false), (0x4, false), (0x8, true)] {
            if y & bit != 0 {
                let b = *atr.get(i)?;
                i += 1;
                if is_td {
                    td = Some(b);
                }
            }
        }
        match td {
            Some(b) => y = b >> 4,
            None => break,
        }
    }
    atr.get(i..i + k)
}

/// Card capabilities from the compact-TLV historical bytes (tag 7, length 3).
/// Returns (command chaining, extended Lc/Le).
pub fn card_capabilities(atr: &[u8]) -> Option<(bool, bool)> {
    let hist = historical_bytes(atr)?;
    let (&category, mut rest) = hist.split_first()?;
    if category != 0x80 {
        return None;
    }
    while let Some((&tl, tail)) = rest.split_first() {
        let (tag, len) = (tl >> 4, (tl & 0x0F) as usize);
        let value = tail.get(..len)?;
        if tag == 0x7 && len >= 3 {
            return Some((value[2] & 0x80 != 0, value[2] & 0x40 != 0));
        }
        rest = &tail[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_other_atrs() {
        // A common T=0 ATR without compact-TLV capabilities.
        let atr = [0x3B, 0x65, 0x00, 0x00, 0x9C, 0x11, 0x01, 0x01, 0x03];
        assert_eq!(historical_bytes(&atr), Some(&atr[4..9]));
        assert_eq!(card_capabilities(&atr), None);
        assert_eq!(card_capabilities(&[0x3B]), None);
    }
}
