//! The C ABI. Every function runs inside the crate's one panic boundary ([`boundary::c_result`]);
//! every returned string is NUL-terminated UTF-8 JSON, never NULL, owned by the caller until
//! [`opi_free_string`].

pub(crate) mod boundary;

use crate::{Error, ImageRequest, Options, StreamEvent};
use boundary::{c_result, optional_str, required_str};
use std::ffi::{c_char, c_int, c_void};

/// The event callback of `opi_openai_get_images_stream`: `user_data` as given to it, and one
/// event as NUL-terminated UTF-8 JSON, valid only until the callback returns (copy what you
/// keep). Return 0 to go on, nonzero to cancel the call.
#[allow(non_camel_case_types)]
pub type opi_event_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event_json: *const c_char) -> c_int>;

/// Reads the arguments every GetImages-like export shares, in the order they are checked:
/// `url` and the description (named `descr_param`) are required, the others optional.
///
/// # Safety
/// Each pointer is NULL or points to a NUL-terminated string valid for the call.
unsafe fn image_request<'a>(
    url: *const c_char,
    token: *const c_char,
    model: *const c_char,
    descr: *const c_char,
    descr_param: &'static str,
    headers: *const c_char,
) -> Result<ImageRequest<'a>, Error> {
    Ok(ImageRequest {
        url: required_str(url, "url")?,
        token: optional_str(token, "token")?,
        model: optional_str(model, "model")?,
        descr: required_str(descr, descr_param)?,
        headers: optional_str(headers, "headers")?,
    })
}

unsafe fn get_images_c(
    url: *const c_char,
    token: *const c_char,
    model: *const c_char,
    descr_json: *const c_char,
    headers_json: *const c_char,
    options_json: *const c_char,
) -> Result<String, Error> {
    let req = image_request(url, token, model, descr_json, "descr", headers_json)?;
    let options = optional_str(options_json, "options")?;
    crate::boundary::panic_probe("capi");
    Ok(crate::get_images_ex(&req, options))
}

/// Generates images: OPI's `GetImages(URL, Token, Model, Description, AdditionalHeaders)`.
///
/// - `url`: the server's base URL (`https://api.openai.com/`, `https://api.openai.com/v1`, or a
///   full `.../images/generations` URL). Required: NULL is an error result.
/// - `token`: the API key; NULL or "" sends no `Authorization` header.
/// - `model`: e.g. "gpt-image-1.5"; NULL or "" sends no `model` unless the description has one.
/// - `descr_json`: the request fields as a JSON object text, OPI's single-quoted JSON, or the
///   path of a `.json` file. Required: NULL is an error result.
/// - `headers_json`: extra headers (JSON object of strings, same forms); NULL or "" for none.
///
/// Every string must be NUL-terminated UTF-8; invalid UTF-8 is an error result naming the
/// argument.
///
/// Returns: NUL-terminated UTF-8 JSON, never NULL: the server's JSON body as is (API errors
/// included, as `{"error": {...}}`), `{}` for an empty body, or our own `{"error": {...}}`
/// with `type` `opi_invalid_response` or `opi_client_error`. Check the `error` key.
/// The caller owns the string and must free it exactly once with `opi_free_string`.
/// Thread-safe: any number of threads may call at once.
///
/// # Safety
/// Each pointer is NULL or points to a NUL-terminated string that stays valid during the call.
#[no_mangle]
pub unsafe extern "C" fn opi_openai_get_images(
    url: *const c_char,
    token: *const c_char,
    model: *const c_char,
    descr_json: *const c_char,
    headers_json: *const c_char,
) -> *mut c_char {
    opi_openai_get_images_ex(
        url,
        token,
        model,
        descr_json,
        headers_json,
        std::ptr::null(),
    )
}

/// `opi_openai_get_images` with call options.
///
/// `options_json`: NULL or "" for defaults, else a JSON object (same three forms as the
/// description) with the keys listed in README.md (`timeout`, `connect_timeout`, `retries`,
/// `max_response_mb`, ...). An unknown key or a bad value is an error result naming `options`.
///
/// Returns a string owned by the caller, freed with `opi_free_string`, exactly as
/// `opi_openai_get_images`.
///
/// # Safety
/// As `opi_openai_get_images`.
#[no_mangle]
pub unsafe extern "C" fn opi_openai_get_images_ex(
    url: *const c_char,
    token: *const c_char,
    model: *const c_char,
    descr_json: *const c_char,
    headers_json: *const c_char,
    options_json: *const c_char,
) -> *mut c_char {
    c_result(|| {
        get_images_c(url, token, model, descr_json, headers_json, options_json)
            .unwrap_or_else(|e| e.to_result_json())
    })
}

/// Generates images with `"stream": true`, calling `on_event` for each event as it arrives.
///
/// Arguments as `opi_openai_get_images_ex`. `on_event` (NULL: no events, just the result) is
/// called on the calling thread, before this function returns, with `user_data` and the event
/// as JSON: the event's own fields (`type`, `b64_json`, `partial_image_index`, `created_at`,
/// `size`, ...), plus `"file"` when the `save_dir` option wrote its image (then without
/// `b64_json` when `drop_b64` is set). The event string is owned by the library and valid only
/// during the callback. A nonzero return closes the connection at once; the result is then an
/// `opi_client_error` with code `cancelled`.
///
/// Returns, like `opi_openai_get_images`, NUL-terminated UTF-8 JSON, never NULL, owned by the
/// caller (free it with `opi_free_string`): the result in the non-streaming shape (`created`,
/// `data` from the completed event(s), `usage`, `size`, `quality`, `background`,
/// `output_format`); an `error` event's error object as `{"error": {...}}`; code
/// `incomplete_stream` when the stream ends without a completed event. A server that answers
/// plain JSON (no streaming, or an error status) gives what `opi_openai_get_images_ex` gives.
/// Thread-safe: any number of threads may call at once, each with its own callback.
///
/// # Safety
/// Each string pointer is NULL or points to a NUL-terminated string that stays valid during
/// the call; `on_event` is NULL or a function that may be called with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn opi_openai_get_images_stream(
    url: *const c_char,
    token: *const c_char,
    model: *const c_char,
    descr_json: *const c_char,
    headers_json: *const c_char,
    options_json: *const c_char,
    on_event: opi_event_fn,
    user_data: *mut c_void,
) -> *mut c_char {
    c_result(|| {
        let result = (|| {
            let req = image_request(url, token, model, descr_json, "descr", headers_json)?;
            let options = Options::parse(optional_str(options_json, "options")?)?;
            // One buffer for every event's NUL-terminated copy.
            let mut buffer: Vec<u8> = Vec::new();
            let mut forward = |event: &StreamEvent| -> bool {
                let Some(callback) = on_event else {
                    return true;
                };
                buffer.clear();
                buffer.extend_from_slice(event.json.as_bytes());
                buffer.push(0);
                // SAFETY: the caller vouches for the callback; the string is NUL-terminated
                // (JSON holds no raw NUL) and lives until the callback returns.
                unsafe { callback(user_data, buffer.as_ptr().cast()) == 0 }
            };
            Ok::<_, Error>(crate::get_images_stream(
                &req,
                &options,
                &mut forward,
                &mut |_| {},
            ))
        })();
        result.unwrap_or_else(|e| e.to_result_json())
    })
}

/// Generates images for many descriptions at once: the calls run concurrently on pooled
/// connections (the `parallel` option, default 4, at most 16).
///
/// `descrs_json`: a JSON array of descriptions (as text, OPI's single-quoted JSON, or the path
/// of a `.json` file); each item a description object or a string in any of the three
/// description forms. Required: NULL is an error result. The other arguments as
/// `opi_openai_get_images_ex`.
///
/// Returns `{"results": [...]}` in input order, each item exactly what
/// `opi_openai_get_images_ex` returns for that description (one failure does not stop the
/// others; `save_dir` file names never collide), or an error result when an argument is
/// invalid. NUL-terminated UTF-8, never NULL, owned by the caller: free it with
/// `opi_free_string`. Thread-safe.
///
/// # Safety
/// Each pointer is NULL or points to a NUL-terminated string that stays valid during the call.
#[no_mangle]
pub unsafe extern "C" fn opi_openai_get_images_batch(
    url: *const c_char,
    token: *const c_char,
    model: *const c_char,
    descrs_json: *const c_char,
    headers_json: *const c_char,
    options_json: *const c_char,
) -> *mut c_char {
    c_result(|| {
        let result = (|| {
            let mut req = image_request(url, token, model, descrs_json, "descrs", headers_json)?;
            // The batch's descriptions are an array, handed to the core on their own.
            let descrs = std::mem::take(&mut req.descr);
            let options = Options::parse(optional_str(options_json, "options")?)?;
            Ok::<_, Error>(crate::get_images_batch(&req, descrs, &options))
        })();
        result.unwrap_or_else(|e| e.to_result_json())
    })
}

/// Builds an image description: OPI's `GetImageDescriptionStructure(Prompt, Count,
/// Background, Size, AdditionalParameters)`.
///
/// Fields `prompt`, `n` (= `count`), `background`, `size`, each left out when empty (NULL, ""
/// or 0); then `additional_json` (NULL/"" or a JSON object in the three forms) merged last and
/// winning. Invalid UTF-8 or bad additional JSON is an error result naming the argument.
///
/// Returns NUL-terminated UTF-8 JSON, never NULL, owned by the caller: free it exactly once
/// with `opi_free_string`.
///
/// # Safety
/// Each pointer is NULL or points to a NUL-terminated string valid during the call.
#[no_mangle]
pub unsafe extern "C" fn opi_openai_get_image_description_structure(
    prompt: *const c_char,
    count: i64,
    background: *const c_char,
    size: *const c_char,
    additional_json: *const c_char,
) -> *mut c_char {
    c_result(|| {
        let result = (|| {
            Ok::<_, Error>(crate::image_description_structure(
                optional_str(prompt, "prompt")?,
                count,
                optional_str(background, "background")?,
                optional_str(size, "size")?,
                optional_str(additional_json, "additional")?,
            ))
        })();
        result.unwrap_or_else(|e| e.to_result_json())
    })
}

/// Frees a string returned by this library. NULL is a no-op. Free each string exactly once,
/// and never a string from elsewhere (nor `opi_version`'s): such a pointer, and one already
/// freed, is ignored rather than freed, but a freed pointer may since have been handed out
/// again. Takes the same time for any length: the string is not read (its size was recorded
/// when it was returned).
///
/// # Safety
/// `s` is NULL or a pointer returned by an `opi_*` function and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn opi_free_string(s: *mut c_char) {
    if s.is_null() {
        return;
    }
    crate::boundary::catch(|_| (), || boundary::free_c_string(s));
}

/// The library's version, e.g. "0.1.0": a static NUL-terminated string, never NULL. Do not free it.
#[no_mangle]
pub extern "C" fn opi_version() -> *const c_char {
    static VERSION_C: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION_C.as_ptr().cast()
}
