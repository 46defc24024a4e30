//! Contained panics: the places that catch a panic (the `ntfs` crate on hostile input, the patch
//! stage, a structure's transform) turn it into an error with the panic's text.

/// The text of a caught panic's payload (a `&str` or a `String`, as `panic!` makes them).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}
