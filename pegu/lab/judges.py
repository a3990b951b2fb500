"""Models that judge images the way text-to-image papers report them now (part of the iqa
extra, ``pip install 'pegu[iqa]'``):

* **Human-preference scores**, trained on which of two images people chose:
  HPSv2.1 (Wu et al. 2023; an open_clip ViT-H-14, checkpoint ``HPS_v2.1_compressed.pt`` of
  the Hub repository ``xswu/HPSv2``), ImageReward (Xu et al., NeurIPS 2023; BLIP ViT-L +
  BERT-base and a reward MLP, ``ImageReward.pt`` of ``THUDM/ImageReward``, through
  transformers' BLIP classes) and PickScore (Kirstain et al. 2023; the CLIP-H model
  ``yuvalkirstain/PickScore_v1`` with the processor of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``).
  Their reference packages do not install beside pegu's stack (``hpsv2`` 1.2.0 pins
  pytest 7.2 and protobuf < 4; ``image-reward`` pins timm 0.6.13; ``t2v_metrics`` pins torch
  2.5.1), so pegu runs the same weights through open_clip and transformers with exactly
  the references' preprocessing, cited at each function, and the tests hold them equal.
* **CMMD** (Jayasumana et al., CVPR 2024, google-research/cmmd): the maximum mean
  discrepancy of CLIP ViT-L/14-336 image embeddings, Gaussian kernel σ = 10, × 1000.
* **VQAScore-style prompt faithfulness** (Lin et al., ECCV 2024): the probability that a
  visual question-answering model answers "yes" to "Does this figure show "{prompt}"?
  Please answer yes or no." (t2v_metrics' question template). VQAScore's own model
  (CLIP-FlanT5-XXL, 11 B parameters) does not fit beside the generator on 16 GB; pegu
  asks BLIP's VQA model (``Salesforce/blip-vqa-base``, 385 M) through transformers.

Every model is found where pegu finds every weight (pegu's cache, an attached Kaggle input,
the Hugging Face cache, the Hub) and refused offline with where to put it. ``"tiny"``
builds random stand-ins of the same classes, for tests only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import compat
from ..core.device import resolve_device
from ..core.errors import BadInput, MissingPackage, WeightsError
from ..core.registry import HPS_V21, IMAGEREWARD
from ..sources import fetch_file, from_pretrained, is_offline, load_state_dict
from .metrics import Clip, _rgb, load_clip

INSTALL = "pip install 'pegu[iqa]' (or: pip install -r requirements-iqa.txt)"
PICKSCORE = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
CMMD_CLIP = "openai/clip-vit-large-patch14-336"
VQA_MODEL = "Salesforce/blip-vqa-base"
# t2v_metrics (VQAScore's package), its default question and answer for every VQA model
QUESTION = 'Does this figure show "{}"? Please answer yes or no.'
# the per-image scores a grid's ``iqa:`` list may name beside pyiqa's metrics (higher is
# better for each); "vqa" is the probability of "yes" to QUESTION about the row's prompt
PREFERENCE = ("hpsv2.1", "imagereward", "pickscore")
PER_IMAGE = PREFERENCE + ("vqa",)
# CMMD's constants (google-research/cmmd distance.py: _SIGMA = 10, _SCALE = 1000)
CMMD_SIGMA, CMMD_SCALE = 10.0, 1000.0
# OpenAI CLIP's normalisation (open_clip constants.OPENAI_DATASET_MEAN / _STD), HPSv2's
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _texts(prompts, n: int) -> list[str]:
    """One prompt per image: a list as long as the images, or one text for all."""
    if isinstance(prompts, str):
        return [prompts] * n
    prompts = list(prompts)
    if len(prompts) != n:
        raise BadInput(f"give one prompt per image ({n} images, {len(prompts)} prompts) or "
                       "one prompt for all")
    return prompts


# ---- PickScore ----

@dataclass
class PickScore:
    """PickScore: ``logit_scale.exp() × cosine(image, prompt)`` of the PickScore CLIP-H
    (the model card's code: processor with padding, truncation and max_length 77, embeddings
    divided by their norm). Around 20–23 for real prompts; higher is preferred. Compare only
    scores of one prompt (the model card: "a softmax over images of the same prompt")."""

    clip: Clip
    name: str = "pickscore"

    def score(self, images, prompts) -> list[float]:
        images = [_rgb(i) for i in images]
        texts = _texts(prompts, len(images))
        scale = float(self.clip.model.logit_scale.detach().float().exp())
        out = []
        for im, t in zip(images, texts):
            e_im, e_tx = self.clip.embed([im], [t])
            out.append(scale * float((e_im @ e_tx.T)[0, 0]))
        return out


def load_pickscore(model: str = PICKSCORE, processor: str = PICKSCORE_PROCESSOR,
                   device="auto", offline: bool | None = None) -> PickScore:
    """PickScore's model (``model``: a Hub id or folder; "tiny": a random stand-in)."""
    if model == "tiny":
        return PickScore(load_clip("tiny-clip", device=device))
    return PickScore(load_clip(model, device=device, offline=offline, processor=processor))


def _load_strict(module, state: dict, what: str) -> None:
    """``module.load_state_dict(state, strict=True)``, a mismatch a WeightsError saying
    ``what`` and the first keys torch names."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{what}: {' '.join(str(e).split())[:300]}") from None


# ---- HPSv2.1 ----

def _open_clip():
    try:
        import open_clip
    except ImportError as e:
        raise MissingPackage(f"HPSv2.1 runs through open_clip ({e}): {INSTALL}") from None
    return open_clip


# A stand-in of HPSv2's class (open_clip's CLIP, its ViT and text transformer) at a width
# a test builds in a second; ViT-H-14 itself has 986 M parameters.
TINY_HPS = dict(embed_dim=32, vision_cfg=dict(image_size=224, layers=2, width=32,
                                              patch_size=32, head_width=16),
                text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2,
                              layers=2))


@dataclass
class HPS:
    """HPSv2.1: the cosine similarity of an image's and its prompt's open_clip embeddings,
    with HPSv2's validation preprocessing (hpsv2 1.2.0, ``img_score.score``: the longer side
    resized to 224, bicubic, on the tensor, padded with black to a square, OpenAI's
    normalisation). Around 0.25–0.35 for generated images; higher is preferred."""

    model: object
    tokenizer: object
    device: object
    image_size: int = 224
    name: str = "hpsv2.1"

    def preprocess(self, image):
        """hpsv2's ``image_transform(224, is_train=False, resize_longest_max=True)``."""
        import torch
        from torchvision.transforms import functional as F

        t = F.to_tensor(_rgb(image))
        h, w = t.shape[1:]
        scale = self.image_size / float(max(h, w))
        if scale != 1.0:
            new = tuple(round(d * scale) for d in (h, w))
            t = F.resize(t, list(new), F.InterpolationMode.BICUBIC)
            ph, pw = self.image_size - new[0], self.image_size - new[1]
            t = F.pad(t, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=0)
        return F.normalize(t, OPENAI_MEAN, OPENAI_STD).to(torch.float32)

    def score(self, images, prompts) -> list[float]:
        import torch

        images = list(images)
        texts = _texts(prompts, len(images))
        out = []
        dtype = next(self.model.parameters()).dtype
        with torch.no_grad():
            for im, t in zip(images, texts):
                x = self.preprocess(im)[None].to(self.device, dtype)
                tok = self.tokenizer([t]).to(self.device)
                f_im = self.model.encode_image(x, normalize=True).float()
                f_tx = self.model.encode_text(tok, normalize=True).float()
                out.append(float((f_im @ f_tx.T)[0, 0]))
        return out


def load_hps(weights=None, device="auto", offline: bool | None = None) -> HPS:
    """HPSv2.1 on ``device``: open_clip's ViT-H-14 with the HPSv2.1 checkpoint (``weights``:
    a file; default pegu's cache, an attached Kaggle input or the download from
    ``xswu/HPSv2``); ``weights="tiny"``: a random stand-in (:data:`TINY_HPS`)."""
    import torch

    open_clip = _open_clip()

    dev = resolve_device(device)
    tokenizer = open_clip.get_tokenizer("ViT-H-14")  # open_clip's bundled BPE vocabulary
    if weights == "tiny":
        torch.manual_seed(0)
        model = open_clip.model.CLIP(**TINY_HPS)
    else:
        cfg = open_clip.get_model_config("ViT-H-14")

        def build(state, where):
            net = open_clip.model.CLIP(**cfg)
            _load_strict(net, state, f"{where} is not an HPSv2 checkpoint of open_clip's "
                         "ViT-H-14")
            return net

        if weights is not None:
            model = build(load_state_dict(weights), str(weights))
        else:
            model, _ = fetch_file(HPS_V21, offline=is_offline(offline), build=build)
    model = model.eval().to(dev, torch.float16 if dev.type == "cuda" else torch.float32)
    return HPS(model, tokenizer, dev)


# ---- ImageReward ----

# ImageReward's BLIP (its med_config.json: BERT-base with cross-attention to a ViT-L/16 at
# 224², vocabulary 30524 = bert-base-uncased + [DEC] + [ENC]; vit.py's LayerNorm eps 1e-6)
IMAGEREWARD_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                          num_attention_heads=16, image_size=224, patch_size=16,
                          layer_norm_eps=1e-6, hidden_act="gelu")
IMAGEREWARD_TEXT = dict(vocab_size=30524, hidden_size=768, intermediate_size=3072,
                        num_hidden_layers=12, num_attention_heads=12, encoder_hidden_size=1024,
                        max_position_embeddings=512, layer_norm_eps=1e-12, hidden_act="gelu")
TINY_IMAGEREWARD_VISION = dict(IMAGEREWARD_VISION, hidden_size=48, intermediate_size=192,
                               num_hidden_layers=2, num_attention_heads=4)
TINY_IMAGEREWARD_TEXT = dict(IMAGEREWARD_TEXT, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4, encoder_hidden_size=48,
                             max_position_embeddings=64)
IMAGEREWARD_MEAN, IMAGEREWARD_STD = 0.16717362830052426, 1.0333394966054072  # ImageReward.py


def reward_head(width: int):
    """ImageReward's MLP: five linear layers with dropout between the first four (no
    activations, as ImageReward.py has them commented out)."""
    import torch.nn as nn

    return nn.Sequential(nn.Linear(width, 1024), nn.Dropout(0.2), nn.Linear(1024, 128),
                         nn.Dropout(0.2), nn.Linear(128, 64), nn.Dropout(0.1),
                         nn.Linear(64, 16), nn.Linear(16, 1))


def _vit_key(k: str) -> str:
    """A BLIP ViT key (vit.py) -> transformers' BlipVisionModel key (the renaming of
    transformers' convert_blip_original_pytorch_to_hf.py)."""
    for a, b in (("cls_token", "embeddings.class_embedding"),
                 ("pos_embed", "embeddings.position_embedding"),
                 ("patch_embed.proj.", "embeddings.patch_embedding."),
                 ("norm.", "post_layernorm.")):
        if k.startswith(a):
            return b + k[len(a):]
    if k.startswith("blocks."):
        k = "encoder.layers." + k[len("blocks."):]
        for a, b in ((".norm1.", ".layer_norm1."), (".norm2.", ".layer_norm2."),
                     (".attn.qkv.", ".self_attn.qkv."), (".attn.proj.", ".self_attn.projection.")):
            k = k.replace(a, b)
    return k


def imagereward_keys(state: dict) -> dict:
    """ImageReward.pt's keys -> {"vision." / "text." / "head." + transformers' names}; the
    text encoder's names are BLIP's own; the unused projections are left out."""
    out = {}
    for k, v in state.items():
        if k.startswith("blip.visual_encoder."):
            out["vision." + _vit_key(k.removeprefix("blip.visual_encoder."))] = v
        elif k.startswith("blip.text_encoder.") and not k.endswith("position_ids"):
            out["text." + k.removeprefix("blip.text_encoder.")] = v
        elif k.startswith("mlp.layers."):
            out["head." + k.removeprefix("mlp.layers.")] = v
    return out


@dataclass
class ImageReward:
    """ImageReward (Xu et al., NeurIPS 2023): BLIP's text encoder reads the prompt with
    cross-attention to the image; its [CLS] feature through the reward MLP, standardised
    ((r − 0.1672) / 1.0333). ImageReward.py's ``score``: the prompt padded to 35 tokens,
    the image resized (shorter side 224, bicubic), centre-cropped, CLIP's normalisation.
    About −2 to 2; higher is preferred."""

    vision: object
    text: object
    head: object
    tokenizer: object
    device: object
    name: str = "imagereward"

    def preprocess(self, image):
        from torchvision import transforms as T

        return T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
                          T.CenterCrop(224), T.ToTensor(),
                          T.Normalize(OPENAI_MEAN, OPENAI_STD)])(_rgb(image))

    def score(self, images, prompts) -> list[float]:
        import torch

        images = list(images)
        texts = _texts(prompts, len(images))
        dtype = next(self.vision.parameters()).dtype
        out = []
        with torch.no_grad():
            for im, t in zip(images, texts):
                tok = self.tokenizer(t, padding="max_length", truncation=True, max_length=35,
                                     return_tensors="pt").to(self.device)
                emb = self.vision(pixel_values=self.preprocess(im)[None].to(self.device,
                                                                            dtype))[0]
                ones = torch.ones(emb.shape[:-1], dtype=torch.long, device=self.device)
                h = self.text(input_ids=tok.input_ids, attention_mask=tok.attention_mask,
                              encoder_hidden_states=emb, encoder_attention_mask=ones,
                              return_dict=True).last_hidden_state[:, 0, :].float()
                r = self.head.float()(h)
                out.append(float((r[0, 0] - IMAGEREWARD_MEAN) / IMAGEREWARD_STD))
        return out


def load_imagereward(weights=None, device="auto", offline: bool | None = None,
                     tiny: bool = False, tokenizer=None) -> ImageReward:
    """ImageReward on ``device``: ``weights`` (a file in ImageReward.pt's layout; default
    pegu's cache, an attached Kaggle input or the download from ``THUDM/ImageReward``), its
    tokenizer bert-base-uncased with [DEC] and [ENC] added (found like every Hub model).
    ``tiny``: the same classes at test width (:data:`TINY_IMAGEREWARD_VISION`), random unless
    ``weights``; ``tokenizer`` then a BERT tokenizer to use."""
    import torch
    from transformers import (BertTokenizer, BlipTextConfig, BlipTextModel, BlipVisionConfig,
                              BlipVisionModel)

    dev = resolve_device(device)
    vis_cfg, txt_cfg = ((TINY_IMAGEREWARD_VISION, TINY_IMAGEREWARD_TEXT) if tiny else
                        (IMAGEREWARD_VISION, IMAGEREWARD_TEXT))
    torch.manual_seed(0)
    with compat.quiet_loading():
        vision = BlipVisionModel(BlipVisionConfig(**vis_cfg))
        text = BlipTextModel(BlipTextConfig(**txt_cfg), add_pooling_layer=False)
    head = reward_head(txt_cfg["hidden_size"])
    parts = {"vision": vision, "text": text, "head": head}

    def build(state, where):
        state = imagereward_keys(state)
        for name, module in parts.items():
            _load_strict(module, {k[len(name) + 1:]: v for k, v in state.items()
                                  if k.startswith(name + ".")},
                         f"{where} is not an ImageReward checkpoint")
        return parts

    if weights is not None:
        build(load_state_dict(weights), str(weights))
    elif not tiny:
        fetch_file(IMAGEREWARD, offline=is_offline(offline), build=build)
    if tokenizer is None and tiny:
        tokenizer = _tiny_vqa_tokenizer()
    if tokenizer is None:
        def load(where, **kw):
            tok = BertTokenizer.from_pretrained(where, **kw)
            tok.add_special_tokens({"bos_token": "[DEC]"})  # blip.py's init_tokenizer
            tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
            return tok

        with compat.quiet_loading():
            tokenizer, _ = from_pretrained(load, "bert-base-uncased", marker="vocab.txt",
                                           offline=is_offline(offline))
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    return ImageReward(vision.eval().to(dev, dtype), text.eval().to(dev, dtype),
                       head.eval().to(dev), tokenizer, dev)


# ---- VQA ----

@dataclass
class VQA:
    """A BLIP VQA model asked yes/no questions: the probability of "yes" as its first
    answer token (transformers' ``BlipForQuestionAnswering.generate``, one question at a
    time, its first step's distribution over the whole vocabulary)."""

    model: object
    tokenizer: object
    image_processor: object
    device: object
    name: str = "vqa"

    def yes_no(self, image, question: str) -> tuple[float, float]:
        """(P("yes"), P("no")) for ``question`` about ``image``."""
        import torch

        m = self.model
        px = self.image_processor(images=[_rgb(image)], return_tensors="pt").pixel_values
        q = self.tokenizer([question], return_tensors="pt").to(self.device)
        with torch.no_grad():
            img = m.vision_model(pixel_values=px.to(self.device, m.dtype))[0]
            ones = torch.ones(img.shape[:-1], dtype=torch.long, device=self.device)
            qe = m.text_encoder(input_ids=q.input_ids, attention_mask=q.attention_mask,
                                encoder_hidden_states=img, encoder_attention_mask=ones,
                                return_dict=False)[0]
            bos = torch.full((1, 1), m.decoder_start_token_id, device=self.device)
            logits = m.text_decoder(input_ids=bos, encoder_hidden_states=qe,
                                    encoder_attention_mask=torch.ones(
                                        qe.shape[:-1], dtype=torch.long, device=self.device),
                                    return_dict=True).logits[0, -1].float()
        p = torch.softmax(logits, -1)
        yes, no = (self.tokenizer.convert_tokens_to_ids(w) for w in ("yes", "no"))
        return float(p[yes]), float(p[no])

    def score(self, images, prompts) -> list[float]:
        """P("yes") to :data:`QUESTION` about each image's prompt (VQAScore's measure)."""
        images = list(images)
        return [self.yes_no(im, QUESTION.format(t))[0]
                for im, t in zip(images, _texts(prompts, len(images)))]


def load_vqa(model: str = VQA_MODEL, device="auto", offline: bool | None = None) -> VQA:
    """BLIP's VQA model (``model``: a Hub id or folder; "tiny": a random stand-in)."""
    import torch
    from transformers import AutoTokenizer, BlipForQuestionAnswering, BlipImageProcessor

    dev = resolve_device(device)
    if model == "tiny":
        net, tok, proc = _tiny_vqa()
    else:
        def load(where, **kw):
            return (BlipForQuestionAnswering.from_pretrained(where, **kw),
                    AutoTokenizer.from_pretrained(where, **kw),
                    BlipImageProcessor.from_pretrained(where, **kw))

        with compat.quiet_loading():
            (net, tok, proc), _ = from_pretrained(load, model, marker="config.json",
                                                  offline=is_offline(offline))
    net = net.eval().to(dev, torch.float16 if dev.type == "cuda" else torch.float32)
    return VQA(net, tok, proc, dev)


TINY_WORDS = ("yes no does this figure show please answer or a an the of with in at photo "
              "photograph portrait person woman man red black blond brown hair old young "
              "smiling wearing suit dress beach city street studio light lighting night day "
              "face").split()


def _tiny_vqa_tokenizer():
    """A word-level BERT tokenizer built in code ([DEC] its bos token)."""
    import tempfile
    from pathlib import Path

    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", '"', "?", ".", ","]
    vocab += list(TINY_WORDS)
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "vocab.txt"
        f.write_text("\n".join(vocab) + "\n")
        return BertTokenizer(str(f), bos_token="[DEC]")


def _tiny_vqa():
    """A random BlipForQuestionAnswering with a word-level BERT vocabulary built in code."""
    import torch
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessor

    tok = _tiny_vqa_tokenizer()
    vocab = tok.get_vocab()
    ids = {w: vocab[w] for w in ("[DEC]", "[PAD]", "[SEP]")}
    torch.manual_seed(0)
    cfg = BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, encoder_hidden_size=32,
                         max_position_embeddings=64, bos_token_id=ids["[DEC]"],
                         pad_token_id=ids["[PAD]"], sep_token_id=ids["[SEP]"],
                         eos_token_id=ids["[SEP]"], initializer_range=0.5),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8,
                           initializer_range=0.5))  # wide weights: answers that vary
    proc = BlipImageProcessor(size={"height": 32, "width": 32})
    return BlipForQuestionAnswering(cfg), tok, proc


# ---- loading by name ----

def load_judge(name: str, device="auto", offline: bool | None = None, tiny: bool = False):
    """The per-image judge ``name`` (one of :data:`PER_IMAGE`) with its default weights
    (``tiny``: random stand-ins); each has ``score(images, prompts) -> list[float]``."""
    if name == "pickscore":
        return load_pickscore("tiny" if tiny else PICKSCORE, device=device, offline=offline)
    if name == "hpsv2.1":
        return load_hps("tiny" if tiny else None, device=device, offline=offline)
    if name == "vqa":
        return load_vqa("tiny" if tiny else VQA_MODEL, device=device, offline=offline)
    if name == "imagereward":
        return load_imagereward(device=device, offline=offline, tiny=tiny)
    raise BadInput(f"unknown judge {name!r}; pegu's are {', '.join(PER_IMAGE)}")


# ---- CMMD ----

@dataclass
class ClipEmbedder:
    """CMMD's image embedding: CLIP ViT-L/14-336's projected image features, L2-normalised,
    from google-research/cmmd's preprocessing (``io_util``: the centre square, resized to
    336 with PIL's bicubic; ``embedding``: values in [0, 1], CLIP's normalisation, no
    further resize or crop)."""

    clip: Clip
    size: int

    def embed(self, images):
        """(N, D) float64 embeddings of PIL images / arrays / paths."""
        import torch
        from PIL import Image

        arrays = []
        for im in images:
            im = _rgb(im)
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
            if im.size != (self.size, self.size):
                im = im.resize((self.size, self.size), Image.BICUBIC)
            arrays.append(np.asarray(im, dtype=np.float32) / 255)
        c = self.clip
        out = []
        with torch.no_grad():
            for a in arrays:
                px = c.image_processor(images=[a], do_resize=False, do_center_crop=False,
                                       do_rescale=False, do_normalize=True,
                                       return_tensors="pt").pixel_values
                e = compat.clip_features(c.model.get_image_features(
                    pixel_values=px.to(c.device, c.model.dtype)))
                out.append(torch.nn.functional.normalize(e.double(), dim=-1).cpu())
        return torch.cat(out).numpy()


def load_embedder(model: str = CMMD_CLIP, device="auto",
                  offline: bool | None = None) -> ClipEmbedder:
    """CMMD's CLIP (``model``: a Hub id or folder; "tiny": a random stand-in, 32 px)."""
    clip = load_clip("tiny-clip" if model == "tiny" else model, device=device, offline=offline)
    crop = clip.image_processor.crop_size
    return ClipEmbedder(clip, int(crop["height"] if isinstance(crop, dict) else crop.height))


def mmd(x, y, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE,
        unbiased: bool = False) -> float:
    """CMMD's distance of two embedding sets (N, D) and (M, D): ``scale`` × the squared MMD
    with a Gaussian kernel of bandwidth ``sigma``. By default as google-research/cmmd
    computes it (``distance.mmd``: means over all pairs, each set's own pairs with itself
    included); ``unbiased``: those left out (Gretton et al. 2012's unbiased estimate), which
    is what the reference's value exceeds by at most ``scale``·0.02·(1/N + 1/M) for
    unit-norm embeddings."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    gamma = 1.0 / (2 * sigma ** 2)

    def k(a, b, same):
        d = -2 * a @ b.T + (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :]
        g = np.exp(-gamma * d)
        if same and unbiased:
            n = len(a)
            if n < 2:
                raise BadInput("the unbiased MMD needs at least 2 samples on each side")
            return (g.sum() - np.trace(g)) / (n * (n - 1))
        return g.mean()

    return float(scale * (k(x, x, True) + k(y, y, True) - 2 * k(x, y, False)))
