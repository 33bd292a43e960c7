-- requires-server: 22.2
-- Insert deduplication on the tables the sink writes: with a window, a repeated insert of a block with
-- the same insert_deduplication_token is dropped by the server. The sink sends a token made from the
-- rows, so a batch it retries after a lost answer (the insert applied, the reply never came) is written
-- once even before FINAL or a merge folds it. ClickHouse 22.2+ (the token setting); 18.16 relies on
-- ReplacingMergeTree and FINAL alone.
ALTER TABLE {db}.frames MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.detections MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.violations MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.sensor_readings MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.deadletters MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.model_events MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.shadow_results MODIFY SETTING non_replicated_deduplication_window = 10000;
