"Audio front end: loading edge cases, resampling, mel filters, log-mel against a plain numpy reference."
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from aacnb import audio
from aacnb.audio import (MIN_SAMPLES, SAMPLE_RATE, AudioError, AudioWarning, LogMelConfig, LogmelFilterBank, Spectrogram,
                         frames_for, load_audio, log_mel, mel_filters)


# ---------------------------------------------------------------- an independent numpy reference
def _ref_mel_filters(sr=32000, n_fft=1024, n_mels=64, fmin=50.0, fmax=14000.0):
    "torchaudio's own slaney/slaney filterbank (an implementation independent of aacnb's), (n_freqs, n_mels)."
    import torchaudio.functional as AF
    fb = AF.melscale_fbanks(n_fft // 2 + 1, fmin, fmax, n_mels, sr, norm="slaney", mel_scale="slaney")
    return fb.double().numpy()


def _ref_log_mel(x, sr=32000, n_fft=1024, hop=320, n_mels=64, fmin=50.0, fmax=14000.0):
    "librosa-style log-mel in float64: reflect pad, frame, periodic hann, np.fft.rfft, |.|^2, mel, 10log10."
    x = np.asarray(x, dtype=np.float64)
    xp = np.pad(x, n_fft // 2, mode="reflect")
    n_frames = 1 + (len(xp) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(xp[idx] * window, axis=1)) ** 2     # (T, n_freqs)
    mel = power @ _ref_mel_filters(sr, n_fft, n_mels, fmin, fmax)  # (T, n_mels)
    return 10 * np.log10(np.maximum(mel, 1e-10))


def _signal(seconds=2.0, seed=0, sr=SAMPLE_RATE):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * rng.standard_normal(len(t)) + 0.5 * np.sin(2 * np.pi * (300 * t + 800 * t ** 2))).astype(np.float32)


# ---------------------------------------------------------------- mel filters and the front end
def test_mel_filters_match_torchaudio_slaney():
    ours = mel_filters(32000, 1024, 64, 50.0, 14000.0).T
    ref = _ref_mel_filters()
    assert ours.shape == ref.shape == (513, 64)
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=1e-4)
    # a second setting (other rate, default fmax) to make sure nothing is hard-wired
    np.testing.assert_allclose(mel_filters(16000, 512, 40, 0.0).T, _ref_mel_filters(16000, 512, 40, 0.0, 8000.0),
                               atol=1e-6, rtol=1e-4)


def test_hann_is_periodic():
    np.testing.assert_allclose(audio.hann_window(1024), torch.hann_window(1024, periodic=True, dtype=torch.float64).numpy(),
                               atol=1e-12)
    assert audio.hann_window(8)[0] == 0 and audio.hann_window(8)[4] == pytest.approx(1.0)


@pytest.mark.parametrize("seconds", [2.0, 0.37])
def test_log_mel_matches_numpy_reference(seconds):
    x = _signal(seconds)
    ours = log_mel(torch.from_numpy(x)).double().numpy()
    ref = _ref_log_mel(x)
    assert ours.shape == ref.shape == (frames_for(len(x)), 64)
    np.testing.assert_allclose(ours, ref, atol=2e-3)  # dB; float32 against float64


def test_torchlibrosa_modules_match_reference_and_log_mel():
    x = _signal(1.5, seed=1)
    spec = Spectrogram(n_fft=1024, hop_length=320, win_length=1024, window="hann", center=True, pad_mode="reflect",
                       freeze_parameters=True)
    fbank = LogmelFilterBank(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, ref=1.0, amin=1e-10, top_db=None,
                             freeze_parameters=True)
    with torch.no_grad():
        out = fbank(spec(torch.from_numpy(x)[None]))  # (1, 1, T, 64)
    assert out.shape == (1, 1, frames_for(len(x)), 64)
    np.testing.assert_allclose(out[0, 0].double().numpy(), _ref_log_mel(x), atol=5e-3)
    np.testing.assert_allclose(out[0, 0].numpy(), log_mel(torch.from_numpy(x)).numpy(), atol=5e-3)


def test_panns_checkpoint_names_load_strictly():
    class FrontEnd(torch.nn.Module):  # the two front-end submodules of PANNs' Cnn14, named as there
        def __init__(self):
            super().__init__()
            self.spectrogram_extractor = Spectrogram(n_fft=1024, hop_length=320, win_length=1024, window="hann",
                                                     center=True, pad_mode="reflect", freeze_parameters=True)
            self.logmel_extractor = LogmelFilterBank(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, ref=1.0,
                                                     amin=1e-10, top_db=None, freeze_parameters=True)

    m = FrontEnd()
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"spectrogram_extractor.stft.conv_real.weight": (513, 1, 1024),
                      "spectrogram_extractor.stft.conv_imag.weight": (513, 1, 1024),
                      "logmel_extractor.melW": (513, 64)}
    assert not any(p.requires_grad for p in m.parameters())
    ckpt = {k: v.clone() + 0.0 for k, v in m.state_dict().items()}  # what a checkpoint's "model" dict holds
    FrontEnd().load_state_dict(ckpt, strict=True)
    # the conv kernels are the windowed DFT: real = cos * w, imag = -sin * w
    w = m.spectrogram_extractor.stft.conv_imag.weight[:, 0].double()
    n, k = np.arange(1024), 3
    np.testing.assert_allclose(w[k].numpy(), -np.sin(2 * np.pi * k * n / 1024) * audio.hann_window(1024), atol=1e-6)


def test_log_mel_batched_equals_per_clip():
    xs = torch.stack([torch.from_numpy(_signal(1.0, seed=s)) for s in range(4)])  # (4, 32000)
    batched = log_mel(xs)
    assert batched.shape == (4, 101, 64)
    for i in range(4):
        np.testing.assert_allclose(batched[i].numpy(), log_mel(xs[i]).numpy(), atol=1e-4)
    # zero-padded shorter clip: the frames whose window stays inside the clip are unchanged
    short = xs[1, :20000]
    padded = torch.stack([xs[0], torch.nn.functional.pad(short, (0, 12000))])
    inside = (20000 - 512) // 320 + 1
    np.testing.assert_allclose(log_mel(padded)[1, :inside].numpy(), log_mel(short)[:inside].numpy(), atol=1e-4)


def test_log_mel_rejects_bad_shapes_and_tiny_inputs():
    with pytest.raises(ValueError, match="shape"):
        log_mel(torch.zeros(1, 2, 3000))
    with pytest.raises(ValueError, match="MIN_SAMPLES"):
        log_mel(torch.zeros(512))
    assert log_mel(np.zeros(2000, np.float32)).shape == (frames_for(2000), 64)  # numpy input is fine


def test_config_defaults_are_panns():
    c = LogMelConfig()
    assert (c.sample_rate, c.n_fft, c.hop_length, c.n_mels, c.f_min, c.f_max) == (32000, 1024, 320, 64, 50.0, 14000.0)
    assert frames_for(32000) == 101 and frames_for(319) == 1
    with pytest.raises(ValueError, match="f_min"):
        LogMelConfig(f_min=20000.0, f_max=14000.0)


# ---------------------------------------------------------------- load_audio
@pytest.mark.parametrize("fmt,ext,subtype", [("WAV", "wav", "PCM_16"), ("FLAC", "flac", "PCM_16"),
                                             ("OGG", "ogg", "VORBIS"), ("WAV", "wav", "FLOAT")])
def test_formats_round_trip(tmp_path, fmt, ext, subtype):
    x = _signal(1.0, seed=2) * 0.5
    p = tmp_path / f"clip.{ext}"
    sf.write(p, x, SAMPLE_RATE, format=fmt, subtype=subtype)
    w = load_audio(p)
    assert w.dtype == torch.float32 and w.ndim == 1 and w.shape[0] == len(x)
    tol = 0.05 if fmt == "OGG" else 1e-3
    if fmt == "OGG":  # lossy: compare what the ear (and the log-mel) sees
        corr = np.corrcoef(w.numpy()[2000:-2000], x[2000:-2000])[0, 1]
        assert corr > 0.95, corr
    else:
        np.testing.assert_allclose(w.numpy(), x, atol=tol)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 11025])
def test_odd_sample_rates_resample_to_32k(tmp_path, sr):
    t = np.arange(sr) / sr  # 1 s
    sf.write(tmp_path / "tone.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, subtype="FLOAT")
    w = load_audio(tmp_path / "tone.wav").numpy()
    assert len(w) == 32000
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(32000) / 32000)
    np.testing.assert_allclose(w[800:-800], ref[800:-800], atol=2e-3)
    w16 = load_audio(tmp_path / "tone.wav", sample_rate=16000)
    assert len(w16) == 16000


def test_resampling_removes_what_would_alias(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    sf.write(tmp_path / "hi.wav", (0.5 * np.sin(2 * np.pi * 20000 * t)).astype(np.float32), sr, subtype="FLOAT")
    w = load_audio(tmp_path / "hi.wav").numpy()  # 20 kHz is above the new Nyquist (16 kHz)
    assert np.abs(w[1000:-1000]).max() < 0.5 * 10 ** (-60 / 20), "a 20 kHz tone must not alias into 12 kHz"


def test_multichannel_is_mean(tmp_path):
    x = _signal(0.5, seed=3)
    data = np.stack([x, 0.5 * x, -0.5 * x, np.zeros_like(x)], 1)  # 4 channels
    sf.write(tmp_path / "quad.wav", data, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "quad.wav").numpy(), data.mean(1), atol=1e-6)


def test_corrupt_empty_missing_files_name_the_file(tmp_path):
    (tmp_path / "garbage.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError, match="garbage.wav"):
        load_audio(tmp_path / "garbage.wav")
    (tmp_path / "zero_bytes.flac").write_bytes(b"")
    with pytest.raises(AudioError, match="zero_bytes.flac.*empty"):
        load_audio(tmp_path / "zero_bytes.flac")
    sf.write(tmp_path / "no_samples.wav", np.zeros((0, 1), np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="no_samples.wav.*no samples"):
        load_audio(tmp_path / "no_samples.wav")
    with pytest.raises(AudioError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
    bad = _signal(0.5)
    bad[100] = np.nan
    sf.write(tmp_path / "nan.wav", bad, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav.*NaN"):
        load_audio(tmp_path / "nan.wav")
    # a truncated file (header promises more than is there) still yields the samples that exist, with a warning
    sf.write(tmp_path / "ok.wav", _signal(1.0), SAMPLE_RATE, subtype="PCM_16")
    raw = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[: len(raw) // 2])
    with pytest.warns(AudioWarning, match="cut.wav: the WAV header promises 32000 samples"):
        assert 10000 < load_audio(tmp_path / "cut.wav").shape[0] <= 32000


def test_silent_clip_is_fine_and_floors_at_minus_100(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(32000, np.float32), SAMPLE_RATE)
    w = load_audio(tmp_path / "silence.wav")
    assert w.abs().max() == 0
    lm = log_mel(w)
    assert lm.shape == (101, 64) and torch.all(lm == -100.0)


def test_very_short_clip_is_padded(tmp_path):
    sf.write(tmp_path / "tick.wav", np.full(50, 0.3, np.float32), 44100, subtype="FLOAT")  # 1 ms, < 1 frame
    w = load_audio(tmp_path / "tick.wav")
    assert w.shape == (MIN_SAMPLES,) and w[: 30].abs().max() > 0.1 and w[200:].abs().max() == 0
    assert log_mel(w).shape == (frames_for(MIN_SAMPLES), 64)


def test_very_long_clip_kept_whole_unless_cropped(tmp_path):
    sr = 16000
    x = (0.1 * np.sin(2 * np.pi * 440 * np.arange(61 * sr) / sr)).astype(np.float32)  # 61 s
    sf.write(tmp_path / "long.flac", x, sr)
    full = load_audio(tmp_path / "long.flac")
    assert full.shape == (61 * SAMPLE_RATE,)
    head = load_audio(tmp_path / "long.flac", max_seconds=2.5)
    assert head.shape == (80000,)
    np.testing.assert_allclose(head.numpy(), full[:80000].numpy(), atol=1e-5)  # the crop equals cropping after
    with pytest.raises(ValueError, match="max_seconds"):
        load_audio(tmp_path / "long.flac", max_seconds=0)
