//! 1C's `tVariant`, declared from the Native API's published description (not copied from
//! 1C's headers), and the conversions between it and Rust values.
//!
//! The union holds C's `struct tm`, whose size differs by platform (56 bytes on Linux x86_64,
//! 36 on Windows); `libc::tm` gives the right one everywhere, and the const asserts below pin
//! the layout the hosts use.

use std::ffi::{c_char, c_long, c_void};

/// `TYPEVAR` codes: what a [`TVariant`] holds.
pub(crate) mod vt {
    /// Nothing: 1C's Undefined, and a parameter left out.
    pub const EMPTY: u16 = 0;
    /// 1C's Null.
    pub const NULL: u16 = 1;
    /// 16-bit integer.
    pub const I2: u16 = 2;
    /// 32-bit integer.
    pub const I4: u16 = 3;
    /// Single-precision float.
    pub const R4: u16 = 4;
    /// Double-precision float.
    pub const R8: u16 = 5;
    /// OLE date (a double).
    pub const DATE: u16 = 6;
    /// C `struct tm`.
    pub const TM: u16 = 7;
    /// Narrow string (`strLen` bytes).
    pub const PSTR: u16 = 8;
    /// Error code (32-bit); 1C shows it as a Number.
    pub const ERROR: u16 = 10;
    /// Boolean (1 byte).
    pub const BOOL: u16 = 11;
    /// 8-bit signed integer.
    pub const I1: u16 = 13;
    /// 8-bit unsigned integer.
    pub const UI1: u16 = 14;
    /// 16-bit unsigned integer.
    pub const UI2: u16 = 15;
    /// 32-bit unsigned integer.
    pub const UI4: u16 = 16;
    /// 64-bit signed integer.
    pub const I8: u16 = 17;
    /// 64-bit unsigned integer.
    pub const UI8: u16 = 18;
    /// C `int`.
    pub const INT: u16 = 19;
    /// C `unsigned int`.
    pub const UINT: u16 = 20;
    /// UTF-16 string (`wstrLen` code units): 1C's String.
    pub const PWSTR: u16 = 22;
    /// Bytes (`strLen` bytes): 1C's BinaryData.
    pub const BLOB: u16 = 23;
}

/// A UTF-16 string in a variant: pointer and length in code units (no NUL counted).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct WideString {
    /// The code units; NULL when empty.
    pub ptr: *mut u16,
    /// How many code units.
    pub len: u32,
}

/// A narrow string or a blob in a variant: pointer and length in bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ByteString {
    /// The bytes; NULL when empty.
    pub ptr: *mut c_char,
    /// How many bytes.
    pub len: u32,
}

/// A COM-style interface reference (never produced or read here; it fixes the union's size).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct InterfaceRef {
    /// The interface pointer.
    pub ptr: *mut c_void,
    /// Its IID.
    pub iid: Guid,
}

/// A GUID as C lays it out (16 bytes, 4-byte aligned).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Guid {
    /// First group.
    pub data1: u32,
    /// Second group.
    pub data2: u16,
    /// Third group.
    pub data3: u16,
    /// The last eight bytes.
    pub data4: [u8; 8],
}

/// The variant's value union, with every member that affects its size and alignment.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) union VariantValue {
    /// I1.
    pub i8: i8,
    /// I2.
    pub i16: i16,
    /// I4, INT, ERROR.
    pub i32: i32,
    /// I8.
    pub i64: i64,
    /// UI1.
    pub u8: u8,
    /// UI2.
    pub u16: u16,
    /// UI4, UINT.
    pub u32: u32,
    /// UI8.
    pub u64: u64,
    /// R4.
    pub f32: f32,
    /// R8, DATE.
    pub f64: f64,
    /// BOOL.
    pub bool: bool,
    /// HRESULT (a C `long`).
    pub hresult: c_long,
    /// TM.
    pub tm: libc::tm,
    /// INTERFACE.
    pub interface: InterfaceRef,
    /// PSTR, BLOB.
    pub bytes: ByteString,
    /// PWSTR.
    pub wide: WideString,
    /// VARIANT (a pointer to another variant).
    pub variant: *mut TVariant,
}

/// 1C's `tVariant`: the value, an array dimension (unused by 1C's String/Number/BinaryData),
/// and the type code.
#[repr(C)]
pub(crate) struct TVariant {
    /// The value, read according to `vt`.
    pub value: VariantValue,
    /// Elements of a one-dimensional array in `value.variant`; 0 otherwise.
    pub cb_elements: u32,
    /// The type code, one of [`vt`].
    pub vt: u16,
}

// The layouts the hosts use, on each of the four targets 1C runs on (see the Native API
// notes): a wrong size here would shift every parameter after the first, so the build fails
// instead. `(size, union size, cbElements, vt, strLen/wstrLen)` in bytes:
// - Linux x86_64: glibc's struct tm is 56 bytes: 64, 56, 56, 60, 8.
// - Linux x86: struct tm is 44 bytes, and 8-byte integers and doubles are 4-aligned in
//   structs (System V i386): 52, 44, 44, 48, 4.
// - Windows x86_64 and x86: struct tm is 36 bytes, and MSVC aligns 8-byte members to 8 on
//   both: 48, 40, 40, 44, and the length after the pointer (8 or 4).
/// `(size of tVariant, size of the value union, offset of cbElements, offset of vt, offset of
/// the string length fields)` on this target.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) const LAYOUT: (usize, usize, usize, usize, usize) = (64, 56, 56, 60, 8);
/// See the Linux x86_64 definition.
#[cfg(all(target_os = "linux", target_arch = "x86"))]
pub(crate) const LAYOUT: (usize, usize, usize, usize, usize) = (52, 44, 44, 48, 4);
/// See the Linux x86_64 definition.
#[cfg(all(windows, target_arch = "x86_64"))]
pub(crate) const LAYOUT: (usize, usize, usize, usize, usize) = (48, 40, 40, 44, 8);
/// See the Linux x86_64 definition.
#[cfg(all(windows, target_arch = "x86"))]
pub(crate) const LAYOUT: (usize, usize, usize, usize, usize) = (48, 40, 40, 44, 4);
#[cfg(any(
    all(target_os = "linux", any(target_arch = "x86_64", target_arch = "x86")),
    all(windows, any(target_arch = "x86_64", target_arch = "x86"))
))]
const _: () = {
    use std::mem::{offset_of, size_of};
    let (size, union, cb_elements, vt, len) = LAYOUT;
    assert!(size_of::<TVariant>() == size);
    assert!(offset_of!(TVariant, value) == 0);
    assert!(size_of::<VariantValue>() == union);
    assert!(offset_of!(TVariant, cb_elements) == cb_elements);
    assert!(offset_of!(TVariant, vt) == vt);
    // pstrVal/strLen and pwstrVal/wstrLen: the pointer at 0, the 32-bit length after it.
    assert!(offset_of!(ByteString, ptr) == 0 && offset_of!(ByteString, len) == len);
    assert!(offset_of!(WideString, ptr) == 0 && offset_of!(WideString, len) == len);
    assert!(size_of::<u16>() == 2 && size_of::<bool>() == 1);
};

/// A parameter as the add-in's methods see it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    /// Left out, or Undefined.
    Empty,
    /// A String (PWSTR, or a narrow PSTR read as UTF-8).
    Text(String),
    /// A Number held as an integer.
    Integer(i64),
    /// A Number held as a float.
    Real(f64),
    /// Anything else: the type code, for the error message.
    Other(u16),
}

impl TVariant {
    /// An EMPTY variant (1C's Undefined).
    #[cfg(test)]
    pub(crate) fn empty() -> TVariant {
        TVariant {
            value: VariantValue { u64: 0 },
            cb_elements: 0,
            vt: vt::EMPTY,
        }
    }

    /// Reads the variant. Invalid UTF-16 or UTF-8 is replaced with U+FFFD rather than
    /// refused: 1C strings are UTF-16 and can hold lone surrogates, which no JSON text needs.
    ///
    /// # Safety
    /// For PWSTR, PSTR: the pointer is NULL or valid for the stated length.
    pub(crate) unsafe fn read(&self) -> Arg {
        // SAFETY (for every union read below): `vt` says which member the host wrote.
        match self.vt {
            vt::EMPTY => Arg::Empty,
            vt::PWSTR => {
                let WideString { ptr, len } = self.value.wide;
                if ptr.is_null() || len == 0 {
                    return Arg::Text(String::new());
                }
                // SAFETY: the caller guarantees `len` code units at `ptr`.
                let units = std::slice::from_raw_parts(ptr, len as usize);
                Arg::Text(String::from_utf16_lossy(units))
            }
            vt::PSTR => {
                let ByteString { ptr, len } = self.value.bytes;
                if ptr.is_null() || len == 0 {
                    return Arg::Text(String::new());
                }
                // SAFETY: the caller guarantees `len` bytes at `ptr`.
                let bytes = std::slice::from_raw_parts(ptr.cast::<u8>(), len as usize);
                Arg::Text(String::from_utf8_lossy(bytes).into_owned())
            }
            vt::I1 => Arg::Integer(self.value.i8.into()),
            vt::I2 => Arg::Integer(self.value.i16.into()),
            vt::I4 | vt::INT | vt::ERROR => Arg::Integer(self.value.i32.into()),
            vt::I8 => Arg::Integer(self.value.i64),
            vt::UI1 => Arg::Integer(self.value.u8.into()),
            vt::UI2 => Arg::Integer(self.value.u16.into()),
            vt::UI4 | vt::UINT => Arg::Integer(self.value.u32.into()),
            vt::UI8 => match i64::try_from(self.value.u64) {
                Ok(n) => Arg::Integer(n),
                Err(_) => Arg::Real(self.value.u64 as f64),
            },
            vt::R4 => Arg::Real(self.value.f32.into()),
            vt::R8 => Arg::Real(self.value.f64),
            other => Arg::Other(other),
        }
    }

    /// Makes the variant a 32-bit integer (1C's Number).
    pub(crate) fn set_i32(&mut self, n: i32) {
        self.value = VariantValue { i32: n };
        self.vt = vt::I4;
    }

    /// Makes the variant a Boolean.
    pub(crate) fn set_bool(&mut self, b: bool) {
        self.value = VariantValue { bool: b };
        self.vt = vt::BOOL;
    }

    /// Makes the variant a String over host-allocated UTF-16 (see [`super::host`]).
    pub(crate) fn set_wide(&mut self, wide: WideString) {
        self.value = VariantValue { wide };
        self.vt = vt::PWSTR;
    }

    /// Makes the variant BinaryData over host-allocated bytes (see [`super::host`]).
    pub(crate) fn set_blob(&mut self, bytes: ByteString) {
        self.value = VariantValue { bytes };
        self.vt = vt::BLOB;
    }
}

/// The 1C name of a variant type, for messages in English or Russian.
pub(crate) fn type_name(code: u16, russian: bool) -> String {
    let (en, ru) = match code {
        vt::EMPTY => ("Undefined", "Неопределено"),
        vt::NULL => ("Null", "Null"),
        vt::I1
        | vt::I2
        | vt::I4
        | vt::I8
        | vt::UI1
        | vt::UI2
        | vt::UI4
        | vt::UI8
        | vt::INT
        | vt::UINT
        | vt::ERROR
        | vt::R4
        | vt::R8 => ("Number", "Число"),
        vt::BOOL => ("Boolean", "Булево"),
        vt::DATE | vt::TM => ("Date", "Дата"),
        vt::PSTR | vt::PWSTR => ("String", "Строка"),
        vt::BLOB => ("BinaryData", "ДвоичныеДанные"),
        other => {
            return if russian {
                format!("с кодом типа {other}")
            } else {
                format!("with type code {other}")
            }
        }
    };
    if russian { ru } else { en }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wide(text: &str) -> (Vec<u16>, TVariant) {
        let mut units: Vec<u16> = text.encode_utf16().collect();
        let mut v = TVariant::empty();
        v.set_wide(WideString {
            ptr: units.as_mut_ptr(),
            len: units.len() as u32,
        });
        (units, v)
    }

    #[test]
    fn a_pwstr_reads_as_text_without_needing_a_nul() {
        let (_units, v) = wide("Жёлтая альпака");
        // SAFETY: `_units` outlives the read.
        assert_eq!(unsafe { v.read() }, Arg::Text("Жёлтая альпака".into()));
    }

    #[test]
    fn every_number_type_reads_as_a_number() {
        let mut v = TVariant::empty();
        v.value = VariantValue { i16: -3 };
        v.vt = vt::I2;
        // SAFETY: numbers hold no pointers.
        assert_eq!(unsafe { v.read() }, Arg::Integer(-3));
        v.value = VariantValue { f64: 2.0 };
        v.vt = vt::R8;
        assert_eq!(unsafe { v.read() }, Arg::Real(2.0));
        v.value = VariantValue { u64: u64::MAX };
        v.vt = vt::UI8;
        assert_eq!(unsafe { v.read() }, Arg::Real(u64::MAX as f64));
    }

    #[test]
    fn a_boolean_is_another_type() {
        let mut v = TVariant::empty();
        v.value = VariantValue { bool: true };
        v.vt = vt::BOOL;
        // SAFETY: a boolean holds no pointer.
        assert_eq!(unsafe { v.read() }, Arg::Other(vt::BOOL));
        assert_eq!(type_name(vt::BOOL, false), "Boolean");
        assert_eq!(type_name(vt::BOOL, true), "Булево");
    }
}
