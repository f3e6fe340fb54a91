uuid_id!(
    /// An API key's id: public, unlike the key's secret.
    ApiKeyId
);
