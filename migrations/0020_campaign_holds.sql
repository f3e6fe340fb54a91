-- A paused campaign's queued notifications are held: moved out of the claim's
-- reach (`due_at` far ahead, so the claim query and its index stay as they
-- are) with their own due time kept in `held_due_at`, in the same transaction
-- as CampaignPaused; CampaignResumed (or CampaignCancelled) puts them back.
-- A row written to the queue while its campaign is paused is held at once.
ALTER TABLE delivery_queue
    ADD COLUMN campaign_id uuid,
    ADD COLUMN held_due_at timestamptz;

-- Only campaign messages have a campaign; the rest of the queue pays nothing.
CREATE INDEX delivery_queue_campaign ON delivery_queue (campaign_id)
    WHERE campaign_id IS NOT NULL;

-- Rows queued before this migration: their campaign from its messages, and
-- held if it is paused now.
UPDATE delivery_queue q SET campaign_id = m.campaign_id
FROM campaign_messages m WHERE m.notification_id = q.notification_id;

UPDATE delivery_queue q SET held_due_at = q.due_at, due_at = '9999-12-31T00:00:00Z'
FROM campaigns c WHERE c.campaign_id = q.campaign_id AND c.status = 'PAUSED';
