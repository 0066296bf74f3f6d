//! The HTTP contract both Mesos APIs share (contract §1.3), as plain functions of header
//! values so the master's and the agent's handlers answer alike: which status code a request
//! that breaks the contract gets, and with what reason in the body.

use std::fmt;

/// A request refused before it reaches any state: the status code Mesos would answer and the
/// reason for the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

/// The largest call body either API reads. A Mesos ACCEPT launching a few hundred tasks is
/// well under it; anything bigger is refused (413) before it is read.
pub const MAX_CALL_BYTES: usize = 4 << 20;

/// Only POST is served on the API paths (405 otherwise).
pub fn check_method(method: &str) -> Result<(), Refusal> {
    if method.eq_ignore_ascii_case("POST") {
        Ok(())
    } else {
        Err(Refusal::new(
            405,
            format!("Expecting 'POST', received '{method}'"),
        ))
    }
}

/// `Content-Type` must be present (400) and JSON (415). Mesos compares the whole string; we
/// also take parameters such as `; charset=utf-8` (pitfall 11). Protobuf is refused with 415
/// and says so: Bramble speaks the JSON form only.
pub fn check_content_type(content_type: Option<&str>) -> Result<(), Refusal> {
    let Some(value) = content_type else {
        return Err(Refusal::bad_request(
            "Expecting 'Content-Type' to be present",
        ));
    };
    let media = value.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else if media.eq_ignore_ascii_case("application/x-protobuf") {
        Err(Refusal::new(
            415,
            "Bramble speaks the JSON form of the v1 API only; send 'application/json'",
        ))
    } else {
        Err(Refusal::new(
            415,
            format!("Expecting 'Content-Type' of application/json or application/x-protobuf, received '{value}'"),
        ))
    }
}

/// A SUBSCRIBE's `Accept` must allow JSON (406 otherwise). A missing header accepts anything.
pub fn check_accept(accept: Option<&str>) -> Result<(), Refusal> {
    let Some(value) = accept else {
        return Ok(());
    };
    let allows_json = value.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        ["application/json", "application/*", "*/*"]
            .iter()
            .any(|ok| media.eq_ignore_ascii_case(ok))
    });
    if allows_json {
        Ok(())
    } else {
        Err(Refusal::new(
            406,
            format!("Expecting 'Accept' to allow application/json, received '{value}'"),
        ))
    }
}

/// A body's declared length, checked before reading it (413 when over `max`).
pub fn check_length(content_length: Option<u64>, max: usize) -> Result<(), Refusal> {
    match content_length {
        Some(len) if len > max as u64 => Err(Refusal::new(
            413,
            format!("request body of {len} bytes is over the {max}-byte limit"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_rules() {
        assert_eq!(check_content_type(None).unwrap_err().status, 400);
        assert!(check_content_type(Some("application/json")).is_ok());
        assert!(check_content_type(Some("application/json; charset=utf-8")).is_ok());
        assert_eq!(
            check_content_type(Some("text/plain")).unwrap_err().status,
            415
        );
        assert_eq!(
            check_content_type(Some("application/x-protobuf"))
                .unwrap_err()
                .status,
            415
        );
    }

    #[test]
    fn accept_rules() {
        assert!(check_accept(None).is_ok());
        assert!(check_accept(Some("application/json")).is_ok());
        assert!(check_accept(Some("text/html, */*;q=0.1")).is_ok());
        assert_eq!(check_accept(Some("text/html")).unwrap_err().status, 406);
    }

    #[test]
    fn method_and_length_rules() {
        assert!(check_method("POST").is_ok());
        assert_eq!(check_method("GET").unwrap_err().status, 405);
        assert!(check_length(Some(10), 10).is_ok());
        assert!(check_length(None, 10).is_ok());
        assert_eq!(check_length(Some(11), 10).unwrap_err().status, 413);
    }
}
