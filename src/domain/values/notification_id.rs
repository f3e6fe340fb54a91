uuid_id!(
    /// A notification's id.
    NotificationId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_v7_and_round_trip() {
        let id = NotificationId::new();
        assert_eq!(id.as_uuid().get_version_num(), 7);
        assert_eq!(NotificationId::parse(&id.to_string()), Ok(id));
        assert!(NotificationId::parse("msg_9e2b4f").is_err());
    }
}
