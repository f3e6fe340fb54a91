use super::Alphabet;

bounded_string!(
    /// Where a push goes: an SNS endpoint ARN or a raw device token
    /// (1–2048 printable ASCII characters without spaces).
    PushTarget,
    2048,
    Alphabet::VisibleAscii
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_arns_and_tokens() {
        assert!(
            PushTarget::parse("arn:aws:sns:eu-west-1:123456789012:endpoint/APNS/app/0f1e").is_ok()
        );
        assert!(PushTarget::parse("fcm:APA91bH-x_y").is_ok());
        assert!(PushTarget::parse("a token").is_err());
        assert!(PushTarget::parse(&"t".repeat(2049)).is_err());
    }
}
