//! The keyed hash as an SQLite function, `retention_keyed_hash(key, value)`, so that an apply
//! batch hashes a column in the UPDATE that scrubs it (one set-based statement, as the plain SQL
//! would be) instead of reading the values out, hashing them here and writing them back. It is
//! exactly [`crate::policy::keyed_hash`]: the key is bound as a parameter of the statement and
//! never stored on the connection; NULL stays NULL; other values are hashed as their text.
//!
//! The function is registered on each new connection through the handle sqlx lends
//! (`lock_handle`), with the `libsqlite3-sys` that sqlx itself links.

use anyhow::{bail, Result};
use libsqlite3_sys as ffi;
use std::os::raw::{c_char, c_int};

/// The SQL name of the function.
pub const FUNCTION: &str = "retention_keyed_hash";

/// Registers the function on one connection.
pub async fn register(conn: &mut sqlx::SqliteConnection) -> Result<()> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    let name = std::ffi::CString::new(FUNCTION).expect("no NUL in the name");
    // SAFETY: `db` is a live connection, held locked by `handle` for the call; the function
    // keeps no state (no user data, no destructor), and `name` is copied by SQLite.
    let rc = unsafe {
        ffi::sqlite3_create_function_v2(
            db,
            name.as_ptr(),
            2,
            ffi::SQLITE_UTF8 | ffi::SQLITE_DETERMINISTIC,
            std::ptr::null_mut(),
            Some(keyed_hash),
            None,
            None,
            None,
        )
    };
    if rc != ffi::SQLITE_OK {
        bail!("cannot register the SQLite function {FUNCTION} (error {rc})");
    }
    Ok(())
}

/// The bytes of an SQLite value as a slice (empty for a NULL pointer).
///
/// SAFETY: `value` must be a live argument of the current call; the slice is valid until the
/// value is converted again or the call returns.
unsafe fn bytes<'a>(value: *mut ffi::sqlite3_value, as_text: bool) -> &'a [u8] {
    let data = if as_text {
        ffi::sqlite3_value_text(value).cast::<u8>()
    } else {
        ffi::sqlite3_value_blob(value).cast::<u8>()
    };
    // Read the length after the conversion, as SQLite's documentation asks.
    let len = ffi::sqlite3_value_bytes(value);
    if data.is_null() || len <= 0 {
        &[]
    } else {
        std::slice::from_raw_parts(data, len as usize)
    }
}

unsafe extern "C" fn keyed_hash(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    let args = std::slice::from_raw_parts(argv, argc.max(0) as usize);
    if args.len() != 2 || ffi::sqlite3_value_type(args[1]) == ffi::SQLITE_NULL {
        ffi::sqlite3_result_null(ctx);
        return;
    }
    let key = bytes(
        args[0],
        ffi::sqlite3_value_type(args[0]) != ffi::SQLITE_BLOB,
    );
    // As `policy::keyed_hash` hashes a text: bytes that are not UTF-8 as U+FFFD (borrowed, not
    // copied, when they are).
    let value = String::from_utf8_lossy(bytes(args[1], true));
    // No panic may cross into C: a failure is an SQL error, which rolls the batch back.
    let hashed = std::panic::catch_unwind(|| {
        let mut digits = [0_u8; crate::policy::KEYED_HASH_DIGITS];
        crate::policy::keyed_hash_into(key, value.as_bytes(), &mut digits);
        digits
    });
    match hashed {
        // SQLite copies the digits (SQLITE_TRANSIENT) before this frame ends.
        Ok(digits) => ffi::sqlite3_result_text(
            ctx,
            digits.as_ptr().cast::<c_char>(),
            digits.len() as c_int,
            ffi::SQLITE_TRANSIENT(),
        ),
        Err(_) => {
            let message = c"retention_keyed_hash failed";
            ffi::sqlite3_result_error(ctx, message.as_ptr(), -1);
        }
    }
}
