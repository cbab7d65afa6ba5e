//! The typed edge of request bodies.
//!
//! [`JsonBody`] is the extractor: every refusal is an [`ApiError`] in the
//! envelope — wrong content type (415), too large (413), not JSON (400
//! `Malformed JSON body`). An absent body reads as `null`, so each endpoint
//! decides what a missing field means. `JsonBody` alone gives the JSON
//! value; `JsonBody<Object<T>>` gives a typed request `T`, deserialized
//! from an object (an absent body reads as `{}` unless the request says
//! otherwise; an array or a scalar is refused rather than read by position,
//! and so is a non-object entry read as a `Field<Object<T>>`).
//!
//! Request structs hold their fields as [`Field`]s, whose deserialization
//! never fails: a field is absent, null, a valid `T`, or the invalid value
//! as sent. So a bad field never turns into serde's wording: each
//! endpoint's `into_command()`-style conversion answers with the exact
//! message the reference gives for that field, and the struct's schema (the
//! field as `Option<T>`) documents what is accepted. The common rule of a
//! required text field (a string, not blank, trimmed) is
//! [`Field::required_text`], written once.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::ApiError;

/// The 400 of a body that is JSON but not an object where one is required.
pub const NOT_AN_OBJECT: &str = "The request body must be a JSON object";

/// The 400 of a body that cannot be read as the request, with the parser's
/// words in `errors.body`.
fn malformed(e: serde_json::Error) -> ApiError {
    ApiError::BadRequest {
        message: "Malformed JSON body".into(),
        errors: Some(serde_json::json!({ "body": e.to_string() })),
    }
}

/// A JSON request body: `JsonBody` for the raw value, `JsonBody<Object<T>>`
/// for a typed request.
pub struct JsonBody<T = Value>(pub T);

/// What a body can be read as, once it is known to be JSON.
pub trait FromJson: Sized {
    fn from_json(value: Value) -> Result<Self, ApiError>;
}

impl FromJson for Value {
    fn from_json(value: Value) -> Result<Self, ApiError> {
        Ok(value)
    }
}

/// A typed request body.
pub trait RequestBody: DeserializeOwned {
    /// The 400 of a body that is JSON but not an object. An endpoint whose
    /// reference names one field answers with that field's message instead.
    fn not_an_object() -> ApiError {
        ApiError::bad_request(NOT_AN_OBJECT)
    }

    /// Whether an absent body reads as `{}`; when not, it is refused like a
    /// body that is not an object.
    const MAY_BE_ABSENT: bool = true;
}

/// A request that must be a JSON object: absent reads as `{}`.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<T: RequestBody> FromJson for Object<T> {
    fn from_json(value: Value) -> Result<Self, ApiError> {
        let value = match value {
            Value::Null if T::MAY_BE_ABSENT => Value::Object(Default::default()),
            Value::Object(_) => value,
            _ => return Err(T::not_an_object()),
        };
        // Fields are `Field`s, which take any value: what fails here is a
        // required plain field, reported like a malformed body.
        T::deserialize(value).map(Object).map_err(malformed)
    }
}

/// One field of a typed request, as sent.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Valid(T),
    /// Present, but not a `T`: the value as sent.
    Invalid(Value),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        if value.is_null() {
            return Ok(Field::Null);
        }
        Ok(match T::deserialize(&value) {
            Ok(valid) => Field::Valid(valid),
            Err(_) => Field::Invalid(value),
        })
    }
}

impl<T> Field<T> {
    /// The value; `None` when absent or null; `invalid()` when it is not a `T`.
    pub fn optional(self, invalid: impl FnOnce() -> ApiError) -> Result<Option<T>, ApiError> {
        match self {
            Field::Absent | Field::Null => Ok(None),
            Field::Valid(v) => Ok(Some(v)),
            Field::Invalid(_) => Err(invalid()),
        }
    }

    /// The value; `missing()` when absent, null or not a `T` (the reference
    /// answers those alike: "Missing or invalid ...").
    pub fn required(self, missing: impl FnOnce() -> ApiError) -> Result<T, ApiError> {
        match self {
            Field::Valid(v) => Ok(v),
            _ => Err(missing()),
        }
    }
}

impl Field<String> {
    /// Text that must be sent: present, a string, and not blank once
    /// trimmed; `missing()` otherwise (absent, null, not a string, blank).
    /// The value comes back trimmed.
    pub fn required_text(self, missing: impl FnOnce() -> ApiError) -> Result<String, ApiError> {
        match self {
            Field::Valid(s) if !s.trim().is_empty() => Ok(trimmed(s)),
            _ => Err(missing()),
        }
    }
}

/// The string without its surrounding whitespace, reusing its buffer when
/// there is none.
fn trimmed(s: String) -> String {
    if s.trim().len() == s.len() {
        s
    } else {
        s.trim().to_string()
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Object<T> {
    /// An object nested in a request (an entry of a list): anything else is
    /// refused, so that a `Field<Object<T>>` reads an array as invalid
    /// rather than as `T`'s fields by position.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        if !value.is_object() {
            return Err(serde::de::Error::custom("not an object"));
        }
        T::deserialize(value)
            .map(Object)
            .map_err(serde::de::Error::custom)
    }
}

/// A whole number as JSON Schema counts one: `5` and `5.0` alike, never
/// `5.5`, a negative number or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole(pub u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        value
            .as_u64()
            .or_else(|| {
                value
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                    .map(|f| f as u64)
            })
            .map(Whole)
            .ok_or_else(|| serde::de::Error::custom("not a whole number"))
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5 && essence.to_ascii_lowercase().ends_with("+json"))
}

impl<S: Send + Sync, T: FromJson> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("").to_string());
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::bad_request("Could not read the request body")
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return T::from_json(Value::Null).map(JsonBody);
        }
        match content_type {
            Some(ct) if is_json(&ct) => {}
            _ => return Err(ApiError::UnsupportedMediaType),
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(malformed)?;
        T::from_json(value).map(JsonBody)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Sample {
        name: Field<String>,
        count: Field<Whole>,
    }

    impl RequestBody for Sample {}

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                name: Field::Absent,
                count: Field::Absent,
            }
        }
    }

    fn sample(v: Value) -> Result<Sample, ApiError> {
        Object::<Sample>::from_json(v).map(|o| o.0)
    }

    #[test]
    fn fields_are_absent_null_valid_or_invalid_and_never_fail() {
        let s = sample(Value::Null).unwrap();
        assert_eq!((s.name, s.count), (Field::Absent, Field::Absent));
        let s = sample(json!({"name": null, "count": 5.0, "extra": 1})).unwrap();
        assert_eq!((s.name, s.count), (Field::Null, Field::Valid(Whole(5))));
        let s = sample(json!({"name": 7, "count": 1.5})).unwrap();
        assert_eq!(s.name, Field::Invalid(json!(7)));
        assert_eq!(s.count, Field::Invalid(json!(1.5)));
        for bad in [json!(-1), json!("5"), json!(true), json!([5])] {
            let s = sample(json!({ "count": bad })).unwrap();
            assert_eq!(s.count, Field::Invalid(bad));
        }
    }

    #[test]
    fn a_typed_body_must_be_an_object() {
        for bad in [json!([]), json!([1, 2]), json!("x"), json!(3)] {
            let err = sample(bad).unwrap_err();
            assert_eq!(err.to_string(), NOT_AN_OBJECT);
        }
    }

    #[test]
    fn optional_and_required_fields() {
        let missing = || ApiError::bad_request("Missing or invalid name");
        assert_eq!(Field::<u8>::Absent.optional(missing).unwrap(), None);
        assert_eq!(Field::<u8>::Null.optional(missing).unwrap(), None);
        assert_eq!(Field::Valid(3u8).optional(missing).unwrap(), Some(3));
        assert!(Field::<u8>::Invalid(json!("x")).optional(missing).is_err());
        assert!(Field::<u8>::Absent.required(missing).is_err());
        assert!(Field::<u8>::Null.required(missing).is_err());
        assert_eq!(Field::Valid(3u8).required(missing).unwrap(), 3);
    }

    #[test]
    fn required_text_is_a_trimmed_non_blank_string() {
        let missing = || ApiError::bad_request("url is required");
        let text = |v: Value| serde_json::from_value::<Field<String>>(v).unwrap();
        assert_eq!(
            text(json!("  https://a.example "))
                .required_text(missing)
                .unwrap(),
            "https://a.example"
        );
        assert_eq!(text(json!("x")).required_text(missing).unwrap(), "x");
        for bad in [json!(""), json!("   "), json!(7), json!(["x"]), json!(null)] {
            let err = text(bad.clone()).required_text(missing).unwrap_err();
            assert_eq!(err.to_string(), "url is required", "{bad}");
        }
        assert!(Field::<String>::Absent.required_text(missing).is_err());
    }

    #[test]
    fn a_nested_object_is_never_read_by_position() {
        let entry = |v: Value| serde_json::from_value::<Field<Object<Sample>>>(v).unwrap();
        match entry(json!({"name": "a", "count": 2})) {
            Field::Valid(Object(s)) => assert_eq!(s.name, Field::Valid("a".into())),
            other => panic!("{other:?}"),
        }
        for bad in [json!(["a", 2]), json!("a"), json!(2)] {
            assert!(matches!(entry(bad), Field::Invalid(_)));
        }
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json(""));
    }
}
