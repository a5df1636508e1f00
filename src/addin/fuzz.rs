//! The add-in's side of the `addin_variant` fuzz target (see `crate::fuzzing`): parameters
//! built from fuzz bytes as a host could pass them, read as variants, and given to
//! GetImageDescriptionStructure, the one method that sends nothing.

use super::component::{Component, GET_IMAGE_DESCRIPTION_STRUCTURE};
use super::variant::{vt, ByteString, TVariant, VariantValue, WideString};
use std::os::raw::c_long;

/// Bytes per parameter header: type code (2), value (8), flags (1).
const HEADER: usize = 11;

/// Runs GetImageDescriptionStructure on up to 6 parameters described by `data`; returns its
/// result, or `None` when the add-in refused a parameter.
pub(crate) fn fuzz_description(data: &[u8]) -> Option<String> {
    let (&count, rest) = data.split_first()?;
    let count = usize::from(count % 7).min(rest.len() / HEADER);
    let (headers, mut pool) = rest.split_at(count * HEADER);
    // Storage the variants point into; kept alive until the call returns.
    let mut wide: Vec<Vec<u16>> = Vec::new();
    let mut narrow: Vec<Vec<u8>> = Vec::new();
    let mut variants = Vec::new();
    for h in headers.chunks_exact(HEADER) {
        // Mostly the codes 1C uses (0..=23), sometimes anything.
        let raw = u16::from_le_bytes([h[0], h[1]]);
        let code = if raw & 0x8000 != 0 { raw } else { raw % 24 };
        let value = u64::from_le_bytes(h[2..10].try_into().expect("8 bytes"));
        let null_with_length = h[10] & 1 != 0;
        let mut v = TVariant {
            value: VariantValue { u64: value },
            cb_elements: 0,
            vt: code,
        };
        if code == vt::PWSTR || code == vt::PSTR || code == vt::BLOB {
            let len = (value as usize) % (pool.len() + 1);
            let (bytes, after) = pool.split_at(len);
            pool = after;
            if code == vt::PWSTR {
                wide.push(
                    bytes
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                );
                let units = wide.last_mut().expect("just pushed");
                v.value = VariantValue {
                    wide: WideString {
                        ptr: if null_with_length {
                            std::ptr::null_mut()
                        } else {
                            units.as_mut_ptr()
                        },
                        len: units.len().max(usize::from(null_with_length)) as u32,
                    },
                };
            } else {
                narrow.push(bytes.to_vec());
                let bytes = narrow.last_mut().expect("just pushed");
                v.value = VariantValue {
                    bytes: ByteString {
                        ptr: if null_with_length {
                            std::ptr::null_mut()
                        } else {
                            bytes.as_mut_ptr().cast()
                        },
                        len: bytes.len().max(usize::from(null_with_length)) as u32,
                    },
                };
            }
        }
        variants.push(v);
    }
    // SAFETY: every string variant points at `len` live units or bytes, or is NULL.
    let args: Vec<_> = variants.iter().map(|v| unsafe { v.read() }).collect();
    let component = Component::default();
    component
        .call_as_procedure(GET_IMAGE_DESCRIPTION_STRUCTURE as c_long, &args)
        .then(|| component.last_result_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_and_a_count_make_a_description() {
        let mut data = vec![2];
        data.extend_from_slice(&vt::PWSTR.to_le_bytes());
        data.extend_from_slice(&6u64.to_le_bytes());
        data.push(0);
        data.extend_from_slice(&vt::I4.to_le_bytes());
        data.extend_from_slice(&3u64.to_le_bytes());
        data.push(0);
        data.extend("cat".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(
            fuzz_description(&data).as_deref(),
            Some(r#"{"prompt":"cat","n":3}"#)
        );
        // A Boolean as the prompt is refused.
        data[1..3].copy_from_slice(&vt::BOOL.to_le_bytes());
        assert_eq!(fuzz_description(&data), None);
    }
}
