//! The add-in's methods and properties, in English and Russian, and how a call turns 1C
//! values into the crate's Rust API and back. No core logic lives here: every result comes
//! from the crate's calls (`get_images_ex`, ...), `image_description_structure` or `VERSION`;
//! asynchronous jobs are in [`super::jobs`].
//!
//! A refused call (a parameter of the wrong type, an unknown job, a caught panic) sets its
//! return value and `LastResult` to the error JSON (the C API's `invalid_argument` object
//! naming the parameter, or `internal`), reports the message through `AddError` and returns
//! false: 1C raises an exception from AddError and the false return; OneScript ignores both
//! and reads the return value, so it gets the error JSON.

use super::host::{Host, Memory};
use super::jobs::{EventSink, JobError, Jobs};
use super::same_name;
use super::variant::{type_name, Arg, TVariant};
use crate::{Error, ImageRequest, Options};
use std::cell::{Cell, RefCell};
use std::ffi::c_long;
use std::path::Path;
use std::time::Duration;

/// What a parameter accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A String (JSON parameters take the same three forms as the C API).
    Text,
    /// A Number, integer or float with no fraction.
    Number,
}

/// One parameter: its names (for error messages), the C API's name for it (the `param` of an
/// error result), kind, and whether it may be left out. A left-out parameter is `""` or `0`,
/// which means "not given", as NULL does in the C API.
struct Param {
    en: &'static str,
    ru: &'static str,
    c: &'static str,
    kind: Kind,
    optional: bool,
}

const fn text(en: &'static str, ru: &'static str, c: &'static str, optional: bool) -> Param {
    Param {
        en,
        ru,
        c,
        kind: Kind::Text,
        optional,
    }
}

const URL: Param = text("URL", "URL", "url", false);
const TOKEN: Param = text("Token", "Токен", "token", true);
const MODEL: Param = text("Model", "Модель", "model", true);
const DESCRIPTION: Param = text("Description", "Описание", "descr", false);
const DESCRIPTIONS: Param = text("Descriptions", "Описания", "descrs", false);
const HEADERS: Param = text("AdditionalHeaders", "ДопЗаголовки", "headers", true);
const OPTIONS: Param = text("Options", "Опции", "options", true);
const PROMPT: Param = text("Prompt", "Промпт", "prompt", false);
const COUNT: Param = Param {
    en: "Count",
    ru: "Количество",
    c: "count",
    kind: Kind::Number,
    optional: true,
};
const BACKGROUND: Param = text("Background", "Фон", "background", true);
const SIZE: Param = text("Size", "Размер", "size", true);
const ADDITIONAL: Param = text("AdditionalParameters", "ДопПараметры", "additional", true);
const JOB_ID: Param = text("JobID", "ИдентификаторЗадания", "job_id", false);
const TIMEOUT: Param = Param {
    en: "TimeoutSeconds",
    ru: "ТаймаутСекунд",
    c: "timeout",
    kind: Kind::Number,
    optional: false,
};

/// A method: every one is a function (a String, or a Boolean for WaitJob and CancelJob).
struct Method {
    en: &'static str,
    ru: &'static str,
    params: &'static [Param],
}

const GET_IMAGES: usize = 0;
const GET_IMAGES_EX: usize = 1;
pub(crate) const GET_IMAGE_DESCRIPTION_STRUCTURE: usize = 2;
const VERSION_METHOD: usize = 3;
const START_GET_IMAGES: usize = 4;
const JOB_RESULT: usize = 5;
const WAIT_JOB: usize = 6;
const CANCEL_JOB: usize = 7;
const GET_IMAGES_BATCH: usize = 8;

/// The methods, indexed as 1C numbers them.
const METHODS: [Method; 9] = [
    Method {
        en: "GetImages",
        ru: "ПолучитьКартинки",
        params: &[URL, TOKEN, MODEL, DESCRIPTION, HEADERS],
    },
    Method {
        en: "GetImagesEx",
        ru: "ПолучитьКартинкиРасш",
        params: &[URL, TOKEN, MODEL, DESCRIPTION, HEADERS, OPTIONS],
    },
    Method {
        en: "GetImageDescriptionStructure",
        ru: "ПолучитьСтруктуруОписанияКартинок",
        params: &[PROMPT, COUNT, BACKGROUND, SIZE, ADDITIONAL],
    },
    Method {
        en: "Version",
        ru: "Версия",
        params: &[],
    },
    Method {
        en: "StartGetImages",
        ru: "НачатьПолучениеКартинок",
        params: &[URL, TOKEN, MODEL, DESCRIPTION, HEADERS, OPTIONS],
    },
    Method {
        en: "JobResult",
        ru: "РезультатЗадания",
        params: &[JOB_ID],
    },
    Method {
        en: "WaitJob",
        ru: "ОжидатьЗадание",
        params: &[JOB_ID, TIMEOUT],
    },
    Method {
        en: "CancelJob",
        ru: "ОтменитьЗадание",
        params: &[JOB_ID],
    },
    Method {
        en: "GetImagesBatch",
        ru: "ПолучитьКартинкиПакетом",
        params: &[URL, TOKEN, MODEL, DESCRIPTIONS, HEADERS, OPTIONS],
    },
];

/// A method's return value.
#[derive(Debug, PartialEq)]
enum Ret {
    /// A JSON result (also kept in LastResult).
    Json(String),
    /// Other text (Version, a job id).
    Text(String),
    /// A Boolean (WaitJob, CancelJob).
    Bool(bool),
}

/// A property.
struct Property {
    en: &'static str,
    ru: &'static str,
    writable: bool,
}

const OPTIONS_PROP: usize = 0;
const LAST_RESULT_PROP: usize = 1;
const VERSION_PROP: usize = 2;

/// The properties, indexed as 1C numbers them.
const PROPERTIES: [Property; 3] = [
    // The call options (JSON, as the C API's options_json) for later GetImages calls.
    Property {
        en: "Options",
        ru: "Опции",
        writable: true,
    },
    // The last JSON result as BinaryData: 1C in isolated mode on Linux cannot reliably pass
    // strings over ~30 KB, and base64 images are far larger.
    Property {
        en: "LastResult",
        ru: "ПоследнийРезультат",
        writable: false,
    },
    Property {
        en: "Version",
        ru: "Версия",
        writable: false,
    },
];

/// Why a property access failed: reported through the host's `AddError`.
type Refusal = String;

/// One add-in object's state. The host drives an object from one thread at a time, and may
/// call back into it while we call it (AddError), so state sits in cells, never behind a
/// long-lived `&mut`.
#[derive(Default)]
pub(crate) struct Component {
    host: Cell<Option<Host>>,
    memory: Cell<Option<Memory>>,
    /// The Options property, as set (validated on setting).
    options: RefCell<String>,
    /// The last GetImages / GetImagesEx / GetImageDescriptionStructure result.
    last_result: RefCell<String>,
    /// Error messages in Russian (the user interface language is Russian).
    russian: Cell<bool>,
    /// The asynchronous jobs (StartGetImages) and their worker threads.
    jobs: Jobs,
}

/// Converts a 1C index (`long`) into a table index.
fn index(num: c_long, len: usize) -> Option<usize> {
    usize::try_from(num).ok().filter(|&i| i < len)
}

impl Component {
    /// `Init`: keeps the host connection (for AddError). Any order with `setMemManager`.
    pub(crate) fn init(&self, host: Option<Host>) -> bool {
        self.host.set(host);
        host.is_some()
    }

    /// `setMemManager`: keeps the host's memory manager.
    pub(crate) fn set_memory(&self, memory: Option<Memory>) -> bool {
        self.memory.set(memory);
        memory.is_some()
    }

    /// `Done`: the host is going away: stop the jobs (no event after this), forget the host
    /// and release what we hold.
    pub(crate) fn done(&self) {
        self.jobs.shutdown();
        self.host.set(None);
        self.memory.set(None);
        self.release();
    }

    /// Stops the jobs and drops the owned values (the complete-object destructor's work); the
    /// object stays usable.
    pub(crate) fn release(&self) {
        self.jobs.shutdown();
        self.options.take();
        self.last_result.take();
    }

    /// `SetUserInterfaceLanguageCode`: "ru" switches error messages to Russian.
    pub(crate) fn set_language(&self, code: &str) {
        self.russian
            .set(code.trim().to_lowercase().starts_with("ru"));
    }

    fn memory(&self) -> Option<Memory> {
        self.memory.get()
    }

    /// `RegisterExtensionAs`: the class name, in host memory.
    pub(crate) fn extension_name(&self) -> Option<*mut u16> {
        self.memory()?.wide_cstr(super::CLASS_NAME)
    }

    /// `GetNProps`.
    pub(crate) fn property_count() -> usize {
        PROPERTIES.len()
    }

    /// `FindProp`: the property's index, by either name in any case.
    pub(crate) fn find_property(name: &str) -> Option<usize> {
        PROPERTIES
            .iter()
            .position(|p| same_name(p.en, name) || same_name(p.ru, name))
    }

    /// `GetPropName`: alias 0 is English, 1 Russian; in host memory.
    pub(crate) fn property_name(&self, num: c_long, alias: c_long) -> Option<*mut u16> {
        let p = &PROPERTIES[index(num, PROPERTIES.len())?];
        let name = match alias {
            0 => p.en,
            1 => p.ru,
            _ => return None,
        };
        self.memory()?.wide_cstr(name)
    }

    /// `IsPropReadable`: all are.
    pub(crate) fn is_readable(num: c_long) -> bool {
        index(num, PROPERTIES.len()).is_some()
    }

    /// `IsPropWritable`.
    pub(crate) fn is_writable(num: c_long) -> bool {
        index(num, PROPERTIES.len()).is_some_and(|i| PROPERTIES[i].writable)
    }

    /// `GetPropVal`.
    pub(crate) fn get_property(&self, num: c_long, out: &mut TVariant) -> bool {
        let Some(i) = index(num, PROPERTIES.len()) else {
            return false;
        };
        let Some(memory) = self.memory() else {
            return false;
        };
        match i {
            OPTIONS_PROP => self.put_text(memory, out, &self.options.borrow()),
            LAST_RESULT_PROP => match memory.bytes(self.last_result.borrow().as_bytes()) {
                Some(blob) => {
                    out.set_blob(blob);
                    true
                }
                None => self.refuse(self.out_of_memory(self.last_result.borrow().len())),
            },
            VERSION_PROP => self.put_text(memory, out, crate::VERSION),
            _ => false,
        }
    }

    /// `SetPropVal`: only Options is writable; its value is checked now, so a mistake shows
    /// where it was made rather than at the next call.
    pub(crate) fn set_property(&self, num: c_long, value: Arg) -> bool {
        let Some(i) = index(num, PROPERTIES.len()) else {
            return false;
        };
        let p = &PROPERTIES[i];
        if !p.writable {
            let message = if self.russian.get() {
                format!("Свойство {} доступно только для чтения", p.ru)
            } else {
                format!("The property {} is read-only", p.en)
            };
            return self.refuse(message);
        }
        let text = match value {
            Arg::Empty => String::new(),
            Arg::Text(text) => text,
            other => {
                let message = if self.russian.get() {
                    format!(
                        "Свойство {} должно быть строкой, а не значением типа {}",
                        p.ru,
                        arg_type(&other, true)
                    )
                } else {
                    format!(
                        "The property {} must be a String, not {}",
                        p.en,
                        arg_type(&other, false)
                    )
                };
                return self.refuse(message);
            }
        };
        if let Err(err) = Options::parse(&text) {
            let message = if self.russian.get() {
                format!("{}: {err}", p.ru)
            } else {
                err.to_string()
            };
            return self.refuse(message);
        }
        *self.options.borrow_mut() = text;
        true
    }

    /// `GetNMethods`.
    pub(crate) fn method_count() -> usize {
        METHODS.len()
    }

    /// `FindMethod`: the method's index, by either name in any case.
    pub(crate) fn find_method(name: &str) -> Option<usize> {
        METHODS
            .iter()
            .position(|m| same_name(m.en, name) || same_name(m.ru, name))
    }

    /// `GetMethodName`: alias 0 is English, 1 Russian; in host memory.
    pub(crate) fn method_name(&self, num: c_long, alias: c_long) -> Option<*mut u16> {
        let m = &METHODS[index(num, METHODS.len())?];
        let name = match alias {
            0 => m.en,
            1 => m.ru,
            _ => return None,
        };
        self.memory()?.wide_cstr(name)
    }

    /// `GetNParams`.
    pub(crate) fn param_count(num: c_long) -> usize {
        index(num, METHODS.len()).map_or(0, |i| METHODS[i].params.len())
    }

    /// `GetParamDefValue`: `""` or `0` for an optional parameter; false for a required one.
    pub(crate) fn param_default(&self, method: c_long, param: c_long, out: &mut TVariant) -> bool {
        let Some(m) = index(method, METHODS.len()) else {
            return false;
        };
        let Some(p) = index(param, METHODS[m].params.len()) else {
            return false;
        };
        let p = &METHODS[m].params[p];
        if !p.optional {
            return false;
        }
        match p.kind {
            Kind::Number => {
                out.set_i32(0);
                true
            }
            Kind::Text => match self.memory() {
                Some(memory) => self.put_text(memory, out, ""),
                None => false,
            },
        }
    }

    /// The last result's text (for the fuzz target, which has no host memory).
    pub(crate) fn last_result_text(&self) -> String {
        self.last_result.borrow().clone()
    }

    /// `HasRetVal`: every method is a function.
    pub(crate) fn has_return_value(num: c_long) -> bool {
        index(num, METHODS.len()).is_some()
    }

    /// `CallAsFunc`: runs the method and returns its value. A refused call (see the module
    /// docs) puts the error JSON in `out`, reports it through AddError and returns false; so
    /// does a host that cannot take the result (without a value).
    pub(crate) fn call_as_function(&self, num: c_long, args: &[Arg], out: &mut TVariant) -> bool {
        let Some(m) = index(num, METHODS.len()) else {
            return false;
        };
        let Some(memory) = self.memory() else {
            return false;
        };
        match self.call(m, args) {
            Ok(Ret::Json(text) | Ret::Text(text)) => self.put_text(memory, out, &text),
            Ok(Ret::Bool(b)) => {
                out.set_bool(b);
                true
            }
            Err(err) => {
                self.put_text(memory, out, &err.to_result_json());
                self.refuse(self.message(&err))
            }
        }
    }

    /// `CallAsProc`: 1C calls a function this way when its value is not used; a JSON result
    /// still lands in LastResult, which is how a large result is best fetched.
    pub(crate) fn call_as_procedure(&self, num: c_long, args: &[Arg]) -> bool {
        let Some(m) = index(num, METHODS.len()) else {
            return false;
        };
        match self.call(m, args) {
            Ok(_) => true,
            Err(err) => self.refuse(self.message(&err)),
        }
    }

    /// Runs method `m` inside the panic boundary (a panic is an `internal` refusal); a JSON
    /// result, or a refusal's error JSON, becomes LastResult.
    fn call(&self, m: usize, args: &[Arg]) -> Result<Ret, Error> {
        let outcome = crate::boundary::catch(Err, || self.run(m, args));
        match &outcome {
            Ok(Ret::Json(json)) => *self.last_result.borrow_mut() = json.clone(),
            Err(err) => *self.last_result.borrow_mut() = err.to_result_json(),
            Ok(_) => {}
        }
        outcome
    }

    /// The message AddError shows for a refusal, in the interface language.
    fn message(&self, err: &Error) -> String {
        match err {
            Error::Internal(_) if self.russian.get() => {
                "Внутренняя ошибка: библиотека перехватила панику; сообщите о ней".to_string()
            }
            other => other.to_string(),
        }
    }

    /// Runs method `m` on the converted parameters; a missing trailing parameter is EMPTY.
    /// `Err` is a refusal: a parameter of the wrong type, an unknown job id.
    fn run(&self, m: usize, args: &[Arg]) -> Result<Ret, Error> {
        crate::boundary::panic_probe("addin");
        let arg = |i: usize| args.get(i).unwrap_or(&Arg::Empty);
        let text = |i: usize| self.text_arg(m, i, arg(i));
        let result = match m {
            GET_IMAGES | GET_IMAGES_EX | START_GET_IMAGES | GET_IMAGES_BATCH => {
                let (url, token, model, descr, headers) =
                    (text(0)?, text(1)?, text(2)?, text(3)?, text(4)?);
                let call_options = if m == GET_IMAGES {
                    String::new()
                } else {
                    text(5)?
                };
                // A call's own options replace the Options property for that call.
                let options = if call_options.trim().is_empty() {
                    self.options.borrow().clone()
                } else {
                    call_options
                };
                let call = Call {
                    url,
                    token,
                    model,
                    descr,
                    headers,
                    options,
                };
                match m {
                    START_GET_IMAGES => return self.start(call),
                    GET_IMAGES_BATCH => call.batch(),
                    _ => call.get_images(),
                }
            }
            GET_IMAGE_DESCRIPTION_STRUCTURE => {
                let prompt = text(0)?;
                let count = self.count_arg(m, 1, arg(1))?;
                let (background, size, additional) = (text(2)?, text(3)?, text(4)?);
                match count {
                    Ok(count) => crate::image_description_structure(
                        &prompt,
                        count,
                        &background,
                        &size,
                        &additional,
                    ),
                    Err(err) => err.to_result_json(),
                }
            }
            VERSION_METHOD => return Ok(Ret::Text(crate::VERSION.to_string())),
            JOB_RESULT => {
                let id = text(0)?;
                self.jobs
                    .take_result(&id)
                    .map_err(|e| self.job_error(m, &id, e))?
            }
            WAIT_JOB => {
                let id = text(0)?;
                let timeout = self.seconds_arg(m, 1, arg(1))?;
                let done = self
                    .jobs
                    .wait(&id, timeout)
                    .map_err(|e| self.job_error(m, &id, e))?;
                return Ok(Ret::Bool(done));
            }
            CANCEL_JOB => {
                let id = text(0)?;
                let cancelled = self
                    .jobs
                    .cancel(&id)
                    .map_err(|e| self.job_error(m, &id, e))?;
                return Ok(Ret::Bool(cancelled));
            }
            _ => unreachable!("method index checked by the caller"),
        };
        Ok(Ret::Json(result))
    }

    /// StartGetImages: the call on a worker thread; the job id at once.
    fn start(&self, call: Call) -> Result<Ret, Error> {
        let temp_dir = self.jobs.temp_dir();
        let id = self
            .jobs
            .start(
                self.host.get(),
                Box::new(move |id, sink| call.run_job(id, sink, &temp_dir)),
            )
            .map_err(|e| Error::Io(format!("could not start a worker thread: {e}")))?;
        Ok(Ret::Text(id))
    }

    /// The refusal for a job id that is unknown, or whose result is not ready.
    fn job_error(&self, m: usize, id: &str, err: JobError) -> Error {
        // A job id is short; anything longer is cut for the message.
        let id: String = id.chars().take(40).collect();
        let ru = self.russian.get();
        let method = &METHODS[m];
        let message = match (err, ru) {
            (JobError::Unknown, false) => format!(
                "{}: there is no job {id:?} (its result may have been taken already)",
                method.en
            ),
            (JobError::Unknown, true) => format!(
                "{}: нет задания {id:?} (его результат, возможно, уже получен)",
                method.ru
            ),
            (JobError::Running, false) => format!(
                "{}: the job {id:?} is still running; wait for its done event or use WaitJob",
                method.en
            ),
            (JobError::Running, true) => format!(
                "{}: задание {id:?} ещё выполняется; дождитесь события done или вызовите ОжидатьЗадание",
                method.ru
            ),
        };
        Error::invalid(JOB_ID.c, message)
    }

    /// A String parameter: EMPTY is `""`; any other type is refused.
    fn text_arg(&self, m: usize, i: usize, arg: &Arg) -> Result<String, Error> {
        match arg {
            Arg::Empty => Ok(String::new()),
            Arg::Text(text) => Ok(text.clone()),
            other => Err(self.wrong_type(m, i, other)),
        }
    }

    /// The Count parameter: any Number; EMPTY is 0 (left out). A Number with a fraction or
    /// beyond 64 bits is a wrong value, reported in the result as the C API would.
    fn count_arg(&self, m: usize, i: usize, arg: &Arg) -> Result<Result<i64, Error>, Error> {
        match *arg {
            Arg::Empty => Ok(Ok(0)),
            Arg::Integer(n) => Ok(Ok(n)),
            // `i64::MAX as f64` is 2^63, the first whole f64 beyond i64: an exclusive bound.
            Arg::Real(f) if f.fract() == 0.0 && (i64::MIN as f64..i64::MAX as f64).contains(&f) => {
                Ok(Ok(f as i64))
            }
            Arg::Real(f) => Ok(Err(Error::invalid(
                "count",
                format!("count must be a whole number, not {f}"),
            ))),
            ref other => Err(self.wrong_type(m, i, other)),
        }
    }

    /// A timeout in seconds: any Number; below 0 (or NaN) is 0, beyond a day a day.
    fn seconds_arg(&self, m: usize, i: usize, arg: &Arg) -> Result<Duration, Error> {
        let seconds = match *arg {
            Arg::Integer(n) => n as f64,
            Arg::Real(f) => f,
            ref other => return Err(self.wrong_type(m, i, other)),
        };
        let seconds = if seconds.is_nan() { 0.0 } else { seconds };
        Ok(Duration::from_secs_f64(seconds.clamp(0.0, 86_400.0)))
    }

    /// The refusal for a parameter of the wrong type: the C API's `invalid_argument` naming
    /// the parameter, with a message in the interface language.
    fn wrong_type(&self, m: usize, i: usize, arg: &Arg) -> Error {
        let (method, param) = (&METHODS[m], &METHODS[m].params[i]);
        let ru = self.russian.get();
        let expected = match (param.kind, ru) {
            (Kind::Text, false) => "a String",
            (Kind::Number, false) => "a Number",
            (Kind::Text, true) => "строкой",
            (Kind::Number, true) => "числом",
        };
        let message = if ru {
            format!(
                "{}: параметр {} ({}) должен быть {expected}, а не значением типа {}",
                method.ru,
                i + 1,
                param.ru,
                arg_type(arg, true)
            )
        } else {
            format!(
                "{}: parameter {} ({}) must be {expected}, not {}",
                method.en,
                i + 1,
                param.en,
                arg_type(arg, false)
            )
        };
        Error::invalid(param.c, message)
    }

    fn out_of_memory(&self, bytes: usize) -> Refusal {
        if self.russian.get() {
            format!("Платформа не выделила память под результат ({bytes} байт)")
        } else {
            format!("The host could not allocate memory for the result ({bytes} bytes)")
        }
    }

    /// Puts `text` into `out` as a host-allocated String; reports a refused allocation.
    fn put_text(&self, memory: Memory, out: &mut TVariant, text: &str) -> bool {
        match memory.wide(text) {
            Some(wide) => {
                out.set_wide(wide);
                true
            }
            None => self.refuse(self.out_of_memory(text.len() * 2)),
        }
    }

    /// Reports `message` through AddError (when the host gave a connection) and fails.
    fn refuse(&self, message: Refusal) -> bool {
        if let Some(host) = self.host.get() {
            host.add_error(&message);
        }
        false
    }
}

/// One image call's arguments, owned (a job's worker thread takes them along).
struct Call {
    url: String,
    token: String,
    model: String,
    descr: String,
    headers: String,
    /// The call's options, or the Options property.
    options: String,
}

impl Call {
    fn request(&self) -> ImageRequest<'_> {
        ImageRequest {
            url: &self.url,
            token: &self.token,
            model: &self.model,
            descr: &self.descr,
            headers: &self.headers,
        }
    }

    /// GetImages / GetImagesEx.
    fn get_images(&self) -> String {
        crate::get_images_ex(&self.request(), &self.options)
    }

    /// GetImagesBatch: `descr` is a JSON array of descriptions; `{"results": [...]}`, as the
    /// C API's batch.
    fn batch(&self) -> String {
        match Options::parse(&self.options) {
            Ok(options) => crate::get_images_batch(&self.request(), &self.descr, &options),
            Err(err) => err.to_result_json(),
        }
    }

    /// Whether the description asks for a stream: `"stream": true` or `partial_images` above
    /// 0. A description that cannot be read is not streamed (the call reports it).
    fn wants_stream(&self) -> bool {
        let Ok(descr) = crate::parse_json_object(&self.descr, "descr") else {
            return false;
        };
        descr.get("stream").and_then(|v| v.as_bool()) == Some(true)
            || descr
                .get("partial_images")
                .and_then(|v| v.as_f64())
                .is_some_and(|n| n > 0.0)
    }

    /// A job's work, on its worker thread (inside the job's cancel scope). A streaming job
    /// writes its images to `save_dir`, or to `temp_dir` when none is set, and sends a
    /// `partial_image` event (job id, index, file path) for each partial image as it arrives.
    fn run_job(self, id: &str, sink: &EventSink, temp_dir: &Path) -> String {
        if !self.wants_stream() {
            return self.get_images();
        }
        let mut options = match Options::parse(&self.options) {
            Ok(options) => options,
            Err(err) => return err.to_result_json(),
        };
        if options.save_dir.is_none() {
            options.save_dir = Some(temp_dir.to_path_buf());
        }
        let mut on_event = |event: &crate::StreamEvent| {
            if let (true, Some(file)) = (event.kind.ends_with("partial_image"), event.file) {
                sink.emit(
                    "partial_image",
                    &serde_json::json!({
                        "job": id,
                        "index": event.index,
                        "file": file.to_string_lossy(),
                    }),
                );
            }
            true
        };
        crate::get_images_stream(&self.request(), &options, &mut on_event, &mut |_| {})
    }
}

/// The 1C type name of a parameter, for messages.
fn arg_type(arg: &Arg, russian: bool) -> String {
    use super::variant::vt;
    let code = match arg {
        Arg::Empty => vt::EMPTY,
        Arg::Text(_) => vt::PWSTR,
        Arg::Integer(_) | Arg::Real(_) => vt::R8,
        Arg::Other(code) => *code,
    };
    type_name(code, russian)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_properties_are_found_by_either_name_in_any_case() {
        assert_eq!(Component::find_method("getimages"), Some(GET_IMAGES));
        assert_eq!(
            Component::find_method("ПОЛУЧИТЬКАРТИНКИРАСШ"),
            Some(GET_IMAGES_EX)
        );
        assert_eq!(Component::find_method("версия"), Some(VERSION_METHOD));
        assert_eq!(Component::find_method("GetImage"), None);
        assert_eq!(
            Component::find_property("последнийрезультат"),
            Some(LAST_RESULT_PROP)
        );
        assert_eq!(Component::find_property("OPTIONS"), Some(OPTIONS_PROP));
    }

    #[test]
    fn a_wrong_type_is_refused_with_the_parameter_named() {
        let c = Component::default();
        let args = [
            Arg::Text("http://127.0.0.1:9/".into()),
            Arg::Empty,
            Arg::Empty,
            Arg::Integer(5),
        ];
        let refusal = c.run(GET_IMAGES, &args).unwrap_err();
        assert_eq!(refusal.param(), Some("descr"));
        assert_eq!(refusal.code(), "invalid_argument");
        assert!(
            refusal.to_string().contains("parameter 4 (Description)"),
            "{refusal}"
        );
        c.set_language("ru");
        let refusal = c.run(GET_IMAGES, &args).unwrap_err();
        assert!(
            refusal.to_string().contains("параметр 4 (Описание)"),
            "{refusal}"
        );
        // The refusal's JSON becomes LastResult (OneScript reads it there or as the value).
        let _ = c.call(GET_IMAGES, &args);
        let last: serde_json::Value = serde_json::from_str(&c.last_result.borrow()).unwrap();
        assert_eq!(last["error"]["param"], "descr");
    }

    #[test]
    fn an_unknown_job_is_refused_naming_job_id() {
        let c = Component::default();
        for m in [JOB_RESULT, WAIT_JOB, CANCEL_JOB] {
            let refusal = c
                .run(m, &[Arg::Text("no-such-job".into()), Arg::Integer(0)])
                .unwrap_err();
            assert_eq!(refusal.param(), Some("job_id"), "{refusal}");
        }
    }

    #[test]
    fn count_takes_any_whole_number_and_reports_a_fraction_in_the_result() {
        let c = Component::default();
        let run = |count: Arg| {
            c.run(
                GET_IMAGE_DESCRIPTION_STRUCTURE,
                &[Arg::Text("cat".into()), count],
            )
            .map(|ret| match ret {
                Ret::Json(json) => json,
                other => panic!("{other:?}"),
            })
        };
        assert_eq!(run(Arg::Real(2.0)).unwrap(), r#"{"prompt":"cat","n":2}"#);
        assert_eq!(run(Arg::Integer(3)).unwrap(), r#"{"prompt":"cat","n":3}"#);
        assert_eq!(run(Arg::Empty).unwrap(), r#"{"prompt":"cat"}"#);
        let fraction: serde_json::Value =
            serde_json::from_str(&run(Arg::Real(1.5)).unwrap()).unwrap();
        assert_eq!(fraction["error"]["param"], "count");
        assert!(run(Arg::Text("2".into()))
            .unwrap_err()
            .to_string()
            .contains("(Count) must be a Number"));
    }

    #[test]
    fn options_are_checked_when_set_and_kept_only_when_valid() {
        let c = Component::default();
        assert!(c.set_property(OPTIONS_PROP as c_long, Arg::Text("{'retries': 0}".into())));
        assert_eq!(*c.options.borrow(), "{'retries': 0}");
        assert!(!c.set_property(OPTIONS_PROP as c_long, Arg::Text("{'bogus': 1}".into())));
        assert!(!c.set_property(OPTIONS_PROP as c_long, Arg::Integer(1)));
        assert_eq!(*c.options.borrow(), "{'retries': 0}");
        assert!(!c.set_property(LAST_RESULT_PROP as c_long, Arg::Text(String::new())));
    }
}
