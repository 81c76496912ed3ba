//! An event's id and time, made when it is recorded and written as their text directly, not
//! through a general-purpose formatter.

/// An event's id and time, made when it is recorded: a version 4 UUID and RFC 3339 UTC with
/// nanoseconds, kept as the text they are written as.
pub struct Stamp {
    id: [u8; 36],
    time: [u8; 30],
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp { id: event_id(), time: rfc3339_nanos_bytes(std::time::SystemTime::now()) }
    }

    /// The id as written (what `id` reads as text).
    pub fn id_bytes(&self) -> &[u8; 36] {
        &self.id
    }

    /// The time as written (what `time` reads as text).
    pub fn time_bytes(&self) -> &[u8; 30] {
        &self.time
    }

    pub fn id(&self) -> &str {
        std::str::from_utf8(&self.id).expect("hex digits and hyphens")
    }

    pub fn time(&self) -> &str {
        std::str::from_utf8(&self.time).expect("ASCII digits")
    }
}

/// A version 4 UUID as distribution's event ids are, unique without a random draw per event:
/// a random key per thread, and a count of the thread's events spread over the other half by
/// a bijection (multiplying by an odd number modulo 2^62), so no two events share an id. The
/// key's half of the text is made once per thread.
fn event_id() -> [u8; 36] {
    use std::cell::Cell;
    thread_local! {
        static NEXT: Cell<([u8; 19], u64)> = Cell::new((id_head(rand::random()), 0));
    }
    let (head, n) = NEXT.with(|c| {
        let (head, n) = c.get();
        c.set((head, n.wrapping_add(1)));
        (head, n)
    });
    const LOW_62: u64 = (1 << 62) - 1;
    let mut out = [0; 36];
    out[..19].copy_from_slice(&head);
    out[19..].copy_from_slice(&id_tail(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) & LOW_62));
    out
}

/// The lowercase hex digits of `n`, most significant first: eight at a time in a word (each
/// nibble spread into its own byte, then made its digit), not a table lookup each.
fn hex16(n: u64) -> [u8; 16] {
    fn eight(half: u32) -> [u8; 8] {
        let mut x = u64::from(half);
        x = (x | x << 16) & 0x0000_FFFF_0000_FFFF;
        x = (x | x << 8) & 0x00FF_00FF_00FF_00FF;
        x = (x | x << 4) & 0x0F0F_0F0F_0F0F_0F0F;
        // 1 in each byte whose nibble is 10 or more, which skips from '9' to 'a'.
        let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        (x + 0x3030_3030_3030_3030 + letters * (b'a' - b'0' - 10) as u64).to_be_bytes()
    }
    let mut out = [0; 16];
    out[..8].copy_from_slice(&eight((n >> 32) as u32));
    out[8..].copy_from_slice(&eight(n as u32));
    out
}

/// `xxxxxxxx-xxxx-4xxx-`: a UUID's first half from `key`, with the version (4) in its place.
fn id_head(key: u64) -> [u8; 19] {
    let h = hex16(key & !(0xF << 12) | (0x4 << 12));
    let mut out = [b'-'; 19];
    out[..8].copy_from_slice(&h[..8]);
    out[9..13].copy_from_slice(&h[8..12]);
    out[14..18].copy_from_slice(&h[12..]);
    out
}

/// `yxxx-xxxxxxxxxxxx`: a UUID's second half from 62 bits, with RFC 4122's variant on top.
fn id_tail(low: u64) -> [u8; 17] {
    let h = hex16(low | (1 << 63));
    let mut out = [b'-'; 17];
    out[..4].copy_from_slice(&h[..4]);
    out[5..].copy_from_slice(&h[4..]);
    out
}

/// `2026-01-02T03:04:05.123456789Z`: UTC with nanoseconds, as Berth's events always were
/// (written directly: a general-purpose formatter cost more than the rest of the timestamp).
/// The part up to the second is kept per thread and made again only when the second changes.
fn rfc3339_nanos_bytes(t: std::time::SystemTime) -> [u8; 30] {
    use std::cell::Cell;
    thread_local! {
        static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    // Each field right-aligned in its place, digits from the last.
    fn put(out: &mut [u8], end: usize, mut n: u64, width: usize) {
        for i in (end - width..end).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    let (cached, prefix) = SECOND.get();
    if cached == secs {
        out[..20].copy_from_slice(&prefix);
    } else {
        let (y, m, day) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        put(&mut out, 4, y.clamp(0, 9999) as u64, 4);
        put(&mut out, 7, m as u64, 2);
        put(&mut out, 10, day as u64, 2);
        put(&mut out, 13, rem / 3600, 2);
        put(&mut out, 16, rem % 3600 / 60, 2);
        put(&mut out, 19, rem % 60, 2);
        SECOND.set((secs, out[..20].try_into().expect("twenty bytes")));
    }
    put(&mut out, 29, d.subsec_nanos() as u64, 9);
    out
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_as_chrono_writes_them() {
        use std::time::{Duration, UNIX_EPOCH};
        for secs in [0u64, 951_782_400, 1_709_164_800, 1_767_225_599, 4_102_444_800, 1_800_000_000] {
            for nanos in [0u32, 1, 999_999_999, 123_456_789] {
                let t = UNIX_EPOCH + Duration::new(secs, nanos);
                let want = chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                assert_eq!(&rfc3339_nanos_bytes(t)[..], want.as_bytes());
            }
        }
    }

    #[test]
    fn event_ids_are_version_4_uuids_and_never_repeat() {
        let ids: Vec<String> = (0..10_000).map(|_| Stamp::now().id().to_string()).collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for id in &ids[..3] {
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!((u.get_version(), u.get_variant()), (Some(uuid::Version::Random), uuid::Variant::RFC4122));
        }
        let other = std::thread::spawn(|| Stamp::now().id().to_string()).join().unwrap();
        assert_ne!(other[..18], ids[0][..18], "each thread has its own key");
    }

    #[test]
    fn hex_digits_as_format_writes_them() {
        for n in [0u64, u64::MAX, 0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210, 0x9a9a_a9a9_0f0f_f0f0] {
            assert_eq!(std::str::from_utf8(&hex16(n)).unwrap(), format!("{n:016x}"));
        }
    }

    #[test]
    fn event_ids_are_written_as_the_uuid_crate_writes_them() {
        for (key, low) in [(0u64, 0u64), (u64::MAX, (1 << 62) - 1), (0x0123_4567_89ab_cdef, 0x3edc_ba98_7654_3210)] {
            let mut want = [0u8; 36];
            uuid::Builder::from_u128((u128::from(key) << 64) | u128::from(low))
                .with_version(uuid::Version::Random)
                .with_variant(uuid::Variant::RFC4122)
                .into_uuid()
                .hyphenated()
                .encode_lower(&mut want);
            let mut mine = id_head(key).to_vec();
            mine.extend(id_tail(low));
            assert_eq!(String::from_utf8(mine).unwrap(), std::str::from_utf8(&want).unwrap());
        }
    }
}
