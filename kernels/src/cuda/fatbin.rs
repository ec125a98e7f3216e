//! The kernel modules `build.rs` compiled, embedded, and a reader of the fatbin container
//! (so tests can check what each holds: SASS and PTX for the built arch).

include!(concat!(env!("OUT_DIR"), "/fatbins.rs"));

const MAGIC: u32 = 0xBA55_ED50;

/// What one fatbin entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Ptx,
    Sass,
    Other(u16),
}

/// One entry of a fatbin: its kind and the `sm_XY` / `compute_XY` arch as `XY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub arch: u32,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The entries of a fatbin image (header: magic, version, header size, payload size; each
/// entry: kind, version, header size, padded payload size, ..., arch at byte 28), or `None`
/// when the bytes are not a well-formed fatbin.
pub fn entries(image: &[u8]) -> Option<Vec<Entry>> {
    if u32_at(image, 0)? != MAGIC {
        return None;
    }
    let header = u16_at(image, 6)? as usize;
    let end = header.checked_add(u64_at(image, 8)? as usize)?;
    if end > image.len() {
        return None;
    }
    let mut out = Vec::new();
    let mut at = header;
    while at < end {
        let kind = match u16_at(image, at)? {
            1 => EntryKind::Ptx,
            2 => EntryKind::Sass,
            k => EntryKind::Other(k),
        };
        let entry_header = u32_at(image, at + 4)? as usize;
        let payload = u32_at(image, at + 8)? as usize;
        out.push(Entry {
            kind,
            arch: u32_at(image, at + 28)?,
        });
        at = at.checked_add(entry_header)?.checked_add(payload)?;
        if entry_header == 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_holds_sass_and_ptx_for_the_built_arch() {
        let (major, minor) = super::super::BUILT_COMPUTE_CAP;
        let arch = major * 10 + minor;
        assert!(!MODULES.is_empty());
        for (name, image) in MODULES {
            let e = entries(image).unwrap_or_else(|| panic!("{name}: not a fatbin"));
            assert!(
                e.contains(&Entry {
                    kind: EntryKind::Sass,
                    arch
                }),
                "{name}: no sm_{arch} SASS in {e:?}"
            );
            assert!(
                e.contains(&Entry {
                    kind: EntryKind::Ptx,
                    arch
                }),
                "{name}: no compute_{arch} PTX in {e:?}"
            );
        }
    }

    #[test]
    fn garbage_is_not_a_fatbin() {
        assert_eq!(entries(b"not a fatbin at all"), None);
        let mut truncated = MODULES[0].1.to_vec();
        truncated.truncate(40);
        assert_eq!(entries(&truncated), None);
    }
}
