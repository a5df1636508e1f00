//! The endpoint rule: where a base URL sends the create-image request.

use super::error::Error;

const PATH: &str = "images/generations";
/// Longest base URL accepted: far beyond any real one, and well inside the request-header
/// limit (and `http::Uri`'s), so that an oversized URL is named as the argument at fault.
const MAX_URL: usize = 32 * 1024;

/// The URL a call is sent to, derived from the base URL the caller gave.
///
/// OPI's rule: the base, plus `/` when it does not end with one, plus `v1/images/generations`;
/// nothing is stripped. Beyond OPI: a base whose path already ends in `/v1` gets only
/// `images/generations`; a URL already ending in `/images/generations` is used as given; a
/// query string on the base is kept (after the path).
///
/// ```
/// use opi_openai::Endpoint;
/// let e = Endpoint::from_base("https://bothub.chat/api/v2/openai/").unwrap();
/// assert_eq!(e.as_str(), "https://bothub.chat/api/v2/openai/v1/images/generations");
/// let e = Endpoint::from_base("https://api.openai.com/v1").unwrap();
/// assert_eq!(e.as_str(), "https://api.openai.com/v1/images/generations");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(String, ureq::http::Uri);

impl Endpoint {
    /// Applies the rule to `base`; an empty base or one that is not an `http(s)://` URL is an
    /// error naming `url`.
    pub fn from_base(base: &str) -> Result<Endpoint, Error> {
        let base = base.trim();
        if base.is_empty() {
            return Err(Error::invalid(
                "url",
                "url is empty: the server's base URL is required",
            ));
        }
        if base.len() > MAX_URL {
            return Err(Error::invalid(
                "url",
                format!(
                    "url is {} bytes long, more than the limit of {MAX_URL}",
                    base.len()
                ),
            ));
        }
        let scheme = |s: &str| {
            base.get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        };
        let rest = if scheme("http://") {
            &base[7..]
        } else if scheme("https://") {
            &base[8..]
        } else {
            return Err(Error::invalid(
                "url",
                format!(
                    "url must start with http:// or https://, got {}",
                    shorten(base)
                ),
            ));
        };
        if rest.is_empty() || rest.starts_with(['/', '?', '#']) {
            return Err(Error::invalid("url", "url has no host"));
        }
        // Bytes first: most URLs are ASCII, and only then do C1 controls need the characters.
        let ascii_bad = |b: &u8| *b < 0x20 || *b == 0x7f || *b == b' ';
        if base.as_bytes().iter().any(ascii_bad)
            || (!base.is_ascii() && base.chars().any(|c| c.is_control()))
        {
            return Err(Error::invalid(
                "url",
                "url contains spaces or control characters",
            ));
        }
        // A fragment is never sent to a server.
        let base = base.split_once('#').map_or(base, |(b, _)| b);
        let (path_part, query) = match base.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (base, None),
        };
        let mut url = String::with_capacity(base.len() + 24);
        url.push_str(path_part);
        let trimmed = path_part.trim_end_matches('/');
        if !trimmed.ends_with("/images/generations") {
            if !url.ends_with('/') {
                url.push('/');
            }
            if !trimmed.ends_with("/v1") || trimmed.len() == scheme_and_host_len(trimmed) {
                url.push_str("v1/");
            }
            url.push_str(PATH);
        }
        if let Some(q) = query {
            if !q.is_empty() {
                url.push('?');
                url.push_str(q);
            }
        }
        // The sender parses the URL as an `http::Uri`: refuse here what it would refuse
        // there, so that the error names `url` and nothing is sent.
        match url.parse::<ureq::http::Uri>() {
            // Kept: the sender uses it as parsed here.
            Ok(uri) => Ok(Endpoint(url, uri)),
            Err(e) => Err(Error::invalid(
                "url",
                format!(
                    "url is not a valid URL ({e}): percent-encode characters such as <, > and `"
                ),
            )),
        }
    }

    /// The full URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full URL, parsed.
    pub(crate) fn uri(&self) -> &ureq::http::Uri {
        &self.1
    }
}

/// Length of `scheme://host[:port]`, so that a host named `...v1` is not taken for a path.
fn scheme_and_host_len(url: &str) -> usize {
    let after = url.find("://").map_or(0, |i| i + 3);
    url[after..].find('/').map_or(url.len(), |i| after + i)
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    fn ep(s: &str) -> String {
        Endpoint::from_base(s).unwrap().as_str().to_string()
    }

    #[test]
    fn endpoint_table() {
        let cases = [
            (
                "https://bothub.chat/api/v2/openai/",
                "https://bothub.chat/api/v2/openai/v1/images/generations",
            ),
            (
                "https://bothub.chat/api/v2/openai",
                "https://bothub.chat/api/v2/openai/v1/images/generations",
            ),
            (
                "https://api.openai.com/",
                "https://api.openai.com/v1/images/generations",
            ),
            (
                "https://api.openai.com",
                "https://api.openai.com/v1/images/generations",
            ),
            (
                "https://api.openai.com/v1",
                "https://api.openai.com/v1/images/generations",
            ),
            (
                "https://api.openai.com/v1/",
                "https://api.openai.com/v1/images/generations",
            ),
            (
                "http://h:8080/v1/images/generations",
                "http://h:8080/v1/images/generations",
            ),
            (
                "http://h/x/images/generations?a=1",
                "http://h/x/images/generations?a=1",
            ),
            (
                "http://h/openai?api-version=2",
                "http://h/openai/v1/images/generations?api-version=2",
            ),
            ("http://h/v1?k=v#frag", "http://h/v1/images/generations?k=v"),
            ("http://v1", "http://v1/v1/images/generations"),
        ];
        for (base, want) in cases {
            assert_eq!(ep(base), want, "base {base}");
        }
    }

    #[test]
    fn bad_bases_name_url() {
        for bad in ["", "ftp://x", "bothub.chat/api", "http://", "http://a b/"] {
            let err = Endpoint::from_base(bad).unwrap_err();
            assert_eq!(err.param(), Some("url"), "{bad}");
        }
        // Controls, C0, DEL and C1 (the last only seen as characters), anywhere in the URL.
        for bad in [
            "http://a\tb/",
            "http://a/\u{7f}",
            "https://a/\u{85}x",
            "https://\u{9f}a/",
        ] {
            let err = Endpoint::from_base(bad).unwrap_err();
            assert!(
                err.to_string().contains("control characters"),
                "{bad:?}: {err}"
            );
        }
        // The scheme in any case.
        assert_eq!(ep("HTTPS://a/"), "HTTPS://a/v1/images/generations");
    }
}
