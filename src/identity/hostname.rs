//! The rules a computer name given with `--hostname` must follow.

use super::IdentityError;

/// Longest NetBIOS computer name (the 16th byte is the service suffix).
pub const NETBIOS_MAX: usize = 15;

/// Checks a computer name given with `--hostname`: a NetBIOS name of at most 15 characters that
/// is also a DNS label: ASCII letters, digits and hyphens, not starting or ending with a hyphen,
/// not only digits.
pub fn check_hostname(name: &str) -> Result<(), IdentityError> {
    let bad = |why: &str| {
        Err(IdentityError::InvalidHostname {
            name: name.into(),
            reason: why.into(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > NETBIOS_MAX {
        return bad(&format!(
            "it has {} characters; a computer name has at most {NETBIOS_MAX}",
            name.chars().count()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return bad(&format!(
            "{c:?} is not allowed; use letters A-Z, digits and hyphens"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("it must not start or end with a hyphen");
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return bad("it must not be only digits");
    }
    Ok(())
}
