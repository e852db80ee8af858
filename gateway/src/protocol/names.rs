//! The rules for channel, event and procedure names and for keys.

use super::code::{Code, Problem};

/// Longest channel, event or procedure name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// Checks a channel, event or procedure name: 1 to [`MAX_NAME_LEN`] bytes of
/// `[A-Za-z0-9._:@-]` (so it fits a URL path segment as it is).
///
/// ```
/// use tcpnet_gateway::protocol::{check_name, Code};
/// assert!(check_name("room-1", Code::BadChannel).is_ok());
/// assert_eq!(check_name("a b", Code::BadChannel).unwrap_err().code, Code::BadChannel);
/// ```
pub fn check_name(name: &str, code: Code) -> Result<(), Problem> {
    let what = match code {
        Code::BadEvent => "event name",
        Code::BadProcedure => "procedure name",
        _ => "channel name",
    };
    if name.is_empty() {
        return Err(Problem::new(code, format!("the {what} is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Problem::new(
            code,
            format!(
                "the {what} has {} bytes, more than {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:@-".contains(*c)))
    {
        return Err(Problem::new(
            code,
            format!("the {what} {name:?} has {c:?}; allowed: letters, digits and . _ : @ -"),
        ));
    }
    Ok(())
}

/// Checks a key: 1 to [`MAX_KEY_LEN`] bytes, no control characters.
///
/// ```
/// use tcpnet_gateway::protocol::check_key;
/// assert!(check_key("user:alice").is_ok());
/// assert!(check_key("").is_err());
/// ```
pub fn check_key(key: &str) -> Result<(), Problem> {
    if key.is_empty() {
        return Err(Problem::new(Code::BadKey, "the key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Problem::new(
            Code::BadKey,
            format!("the key has {} bytes, more than {MAX_KEY_LEN}", key.len()),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(Problem::new(
            Code::BadKey,
            format!("the key {key:?} has a control character"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_plain() {
        assert!(check_name(&"a".repeat(MAX_NAME_LEN), Code::BadChannel).is_ok());
        let long = check_name(&"a".repeat(MAX_NAME_LEN + 1), Code::BadEvent).unwrap_err();
        assert_eq!(long.code, Code::BadEvent);
        assert!(long.message.contains("129 bytes"), "{}", long.message);
        for bad in ["", "a/b", "a b", "é", "a\n"] {
            assert!(check_name(bad, Code::BadChannel).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_bounded_without_control_characters() {
        assert!(check_key("Ünïcode key").is_ok());
        assert!(check_key("a\u{0}").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }
}
