"""Issue #16, part 3: LAION-CLAP-style inference helpers (`aacnb.inference`).

A clip's embedding and caption do not depend on its batch-mates or the batch size; files at any sample rate and
channel count are read as the training audio was; a saved folder, a checkpoint or a loaded model all work.
"""
import numpy as np
import pytest
import soundfile as sf
import torch

from aacnb.caption import AudioCaptioner
from aacnb.captioning import Captioner, build_captioner
from aacnb.inference import caption_audio_files, embed_audio_files, embed_texts, embed_waveforms
from aacnb.retrieval import build_biencoder
from aacnb.text import Vocabulary

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bi():
    torch.manual_seed(0)
    return build_biencoder("cnn14-tiny", "minilm", pretrained="text", embed_dim=32).freeze_text().eval()


@pytest.fixture
def files(tmp_path):
    "Clips of 0.5 to 8 s at 16, 32, 44.1 and 48 kHz, mono and stereo."
    rng = np.random.default_rng(1)
    out = []
    for i, (sec, sr, ch) in enumerate([(1.0, 32000, 1), (8.0, 44100, 2), (0.5, 16000, 1), (3.0, 48000, 2),
                                       (1.2, 32000, 1)]):
        n = int(sec * sr)
        x = (0.1 * rng.standard_normal((n, ch)) * np.hanning(n)[:, None]).astype(np.float32)
        p = tmp_path / f"clip{i}.{'flac' if ch == 2 else 'wav'}"
        sf.write(p, x, sr, subtype="FLOAT" if p.suffix == ".wav" else "PCM_24")
        out.append(str(p))
    return out


def test_an_embedding_does_not_depend_on_batch_mates_or_batch_size(bi, files):
    together = embed_audio_files(bi, files, batch_size=8, progress=False)
    alone = torch.cat([embed_audio_files(bi, [f], batch_size=1, progress=False) for f in files])
    assert together.shape == (len(files), 32) and together.dtype == torch.float32
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together.norm(dim=1), torch.ones(len(files)), atol=1e-5)


def test_waveforms_embed_as_their_files(bi, files):
    x, sr = sf.read(files[3], dtype="float32")  # 48 kHz stereo
    assert torch.allclose(embed_waveforms(bi, [x.T], sample_rate=sr), embed_audio_files(bi, [files[3]], progress=False),
                          atol=1e-4)
    with pytest.raises(ValueError, match="waveform 0: expected"):
        embed_waveforms(bi, [np.zeros((2, 2, 10))])


def test_texts_embed_as_the_model_does(bi):
    texts = [f"caption number {i} of a sound" for i in range(10)]
    assert torch.allclose(embed_texts(bi, texts, batch_size=3, progress=False), bi.encode_text(texts), atol=1e-6)
    with pytest.raises(TypeError, match="not one string"):
        embed_texts(bi, "a dog")


def test_caption_audio_files_from_a_folder_or_a_loaded_captioner(bi, files, tmp_path):
    vocab = Vocabulary.build(["a dog barks in the rain", "rain falls on a roof", "a bell rings"])
    torch.manual_seed(3)
    cap = build_captioner("transformer", vocab_size=len(vocab), feature_dim=bi.audio_encoder.embed_dim, enc_hidden=8,
                          d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, enc_dropout=0.0).eval()
    want = [r["caption"] for r in AudioCaptioner(cap, vocab, bi.audio_encoder, device="cpu").caption_files(files)]
    cap.save_pretrained(tmp_path / "cap", vocab=vocab, extractor=bi)
    assert caption_audio_files(tmp_path / "cap", files, batch_size=2, device="cpu", progress=False) == want
    loaded = Captioner.from_pretrained(tmp_path / "cap")
    assert caption_audio_files(loaded, files[::-1], batch_size=1, device="cpu", progress=False) == want[::-1]
    with pytest.raises(ValueError, match="missing.wav: no such audio file"):
        caption_audio_files(loaded, [files[0], str(tmp_path / "missing.wav")], device="cpu", progress=False)
