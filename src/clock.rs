//! Wall-clock time in the two units the code uses: unix seconds (token and session lifetimes,
//! as the IdP's `exp`/`iat` count them) and unix milliseconds (the store's revocation list and
//! health marks). A clock before 1970 reads as 0 rather than failing a request.

/// Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
