def test_fbank_batch_is_real_speech(fbank_batch):
    lengths = fbank_batch["feature_lengths"]
    assert fbank_batch["features"].shape[0] == 8
    assert int(lengths.min()) > 50  # at least half a second of speech each
    assert fbank_batch["target_lengths"].max() <= fbank_batch["targets"].shape[1]
