"""The offline corpus: a small web of documents and images, generated from a seed, indexed.

Nothing here is downloaded: the corpus is made deterministically, so the demo, the tests and a
training task can all rebuild the very same one anywhere. It holds

- a **codebook**: one page per symbol (``A``–``Z``, ``0``–``9`` by default) saying which
  codeword the symbol stands for. Only this corpus knows the mapping, so a question like "the
  marker shows K; which option is K's codeword?" needs a ``text_search`` (``codebook(seed)``
  gives the mapping to whoever writes such questions);
- a **gallery**: procedurally painted images ("plates"), each with a page that describes it;
  ``image_search`` finds a plate's page from the plate, a crop of it or a rescaled copy;
- **articles**: filler pages on made-up places and objects, so that search has to rank.

Every page lives under ``http://corpus.invalid/`` (``.invalid`` is reserved by RFC 2606 and
never resolves): offline URLs cannot reach anything online, and ``web_visit``'s offline
provider serves exactly these pages.

On disk (``build_corpus(root)``): ``manifest.json``, ``pages.jsonl`` (url, title, kind, html),
``images/<plate>.png``, and the two indexes, ``text.sqlite`` (``tools.search.text_index``) and
``images.npz`` (``tools.search.image_index``). ``default_corpus()`` builds the default corpus
once per machine in a cache folder and reuses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import html
import json
import math
import os
import random
import shutil
import string
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CORPUS_VERSION = 1
BASE_URL = "http://corpus.invalid"
DEFAULT_SYMBOLS = string.ascii_uppercase + string.digits
#: Environment variable naming the folder that holds built corpora (else the user cache).
CACHE_ENV = "BEAM_AGENTIC_VLM_CACHE"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


CODEWORDS = _words(
    "falcon harbor lantern meadow copper glacier orchard willow ember canyon thistle beacon "
    "marble sparrow quartz saffron tundra velvet walnut zephyr anchor bramble cobalt delta "
    "fennel garnet heron indigo juniper kestrel lagoon mistral nectar onyx pepper quill "
    "raven sable tamarind umber violet wren yarrow zinnia almond basalt cedar dune"
)
_ADJECTIVES = _words(
    "amber ashen azure broad bright crimson distant dusky eastern faded gilded golden hidden "
    "hollow iron lesser lofty lunar misty northern old pale quiet red rustic silent silver "
    "southern stone upper verdant western wild"
)
_NOUNS = _words(
    "arch basin bridge causeway chapel citadel cove ferry forge garden gate grove hall "
    "harbour lattice lighthouse market mill monastery orchard pavilion quarry spire station "
    "terrace tower vault viaduct well wharf"
)
_TOPICS = _words(
    "history trade climate architecture festivals river crossings local crafts railways "
    "fisheries dialects pottery weaving astronomy mapmaking"
)
_SYLLABLES = _words("ka lo mi ra ven tor sel dun bri hal mar quin zo fe gar nis pel wyn ost ur")
_PLATE_SIZES = ((640, 480), (512, 512), (480, 640), (720, 405))


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate: the seed decides every word and pixel."""

    seed: int = 0
    symbols: str = DEFAULT_SYMBOLS
    plates: int = 40
    articles: int = 120

    def __post_init__(self) -> None:
        if len(set(self.symbols)) != len(self.symbols) or not self.symbols:
            raise ValueError("symbols must be distinct characters")
        if len(self.symbols) > len(CODEWORDS):
            raise ValueError(f"at most {len(CODEWORDS)} symbols (one codeword each)")
        if self.plates < 0 or self.articles < 0:
            raise ValueError("plates and articles must be >= 0")

    @property
    def key(self) -> str:
        """A folder name that changes whenever the generated corpus would."""
        digest = hashlib.sha256(self.symbols.encode()).hexdigest()[:8]
        return f"v{CORPUS_VERSION}-s{self.seed}-p{self.plates}-a{self.articles}-{digest}"


@dataclass(frozen=True)
class Document:
    """One page of the corpus."""

    url: str
    title: str
    kind: str  # "codebook", "plate" or "article"
    html: str


@dataclass(frozen=True)
class Plate:
    """One gallery image: where its picture and its page are, and what it is called."""

    id: str
    title: str
    image_url: str
    page_url: str
    file: str  # relative to the corpus root


@dataclass(frozen=True)
class Corpus:
    """A built corpus on disk (see the module docstring for the layout)."""

    root: Path
    spec: CorpusSpec
    plates: tuple[Plate, ...] = field(default=())

    @property
    def pages_path(self) -> Path:
        return self.root / "pages.jsonl"

    @property
    def text_index_path(self) -> Path:
        return self.root / "text.sqlite"

    @property
    def image_index_path(self) -> Path:
        return self.root / "images.npz"

    def documents(self) -> Iterator[Document]:
        with self.pages_path.open(encoding="utf-8") as lines:
            for line in lines:
                yield Document(**json.loads(line))


def codebook(seed: int = 0, symbols: str = DEFAULT_SYMBOLS) -> dict[str, str]:
    """Symbol -> codeword, as the corpus's codebook pages state it."""
    words = list(CODEWORDS)
    random.Random(f"codebook-{seed}").shuffle(words)
    return dict(zip(symbols, words, strict=False))


def symbol_slug(symbol: str) -> str:
    """The URL path part of a symbol's codebook page (letters are case-folded)."""
    return symbol.lower() if symbol.isalnum() else f"u{ord(symbol):04x}"


def codebook_url(symbol: str) -> str:
    return f"{BASE_URL}/codebook/{symbol_slug(symbol)}.html"


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body><article>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</article>\n"
        "<footer><p>Offline corpus page. Not a real web site.</p></footer></body></html>\n"
    )


def _paragraphs(*texts: str) -> str:
    return "\n".join(f"<p>{html.escape(t)}</p>" for t in texts)


def _place_name(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def codebook_documents(spec: CorpusSpec) -> list[Document]:
    """One page per symbol, plus an index page that lists no codewords."""
    book = codebook(spec.seed, spec.symbols)
    rng = random.Random(f"codebook-pages-{spec.seed}")
    documents = []
    for symbol, word in book.items():
        colour = rng.choice(_ADJECTIVES)
        number = rng.randint(100, 999)
        title = f"Codebook entry: symbol {symbol}"
        body = _paragraphs(
            f"In the field codebook, the symbol {symbol} stands for the codeword {word}.",
            f"Entry {number} of the codebook. When a marker shows {symbol}, read it as "
            f'"{word}". The entry was last revised in the {colour} edition.',
            "Codewords are unique: no two symbols share one.",
        )
        documents.append(Document(codebook_url(symbol), title, "codebook", _page(title, body)))
    listing = ", ".join(f"{s}" for s in book)
    index_body = _paragraphs(
        "The field codebook maps every marker symbol to a codeword. Each symbol has its own "
        'entry page; search for "codebook symbol" and the symbol to find it.',
        f"Symbols covered: {listing}.",
    )
    documents.append(
        Document(
            f"{BASE_URL}/codebook/index.html",
            "The field codebook",
            "codebook",
            _page("The field codebook", index_body),
        )
    )
    return documents


def article_documents(spec: CorpusSpec) -> list[Document]:
    """Filler pages about made-up places: something for search to rank against."""
    rng = random.Random(f"articles-{spec.seed}")
    documents = []
    for number in range(spec.articles):
        place = _place_name(rng)
        topic = rng.choice(_TOPICS)
        landmark = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
        year = rng.randint(1620, 1990)
        title = f"{place}: {topic}"
        texts = [
            f"{place} is a small town known for its {topic} and for the {landmark}, "
            f"built in {year}.",
            f"The {landmark} of {place} was restored {rng.randint(2, 9)} times; visitors count "
            f"{rng.randint(3, 90)} steps to its top.",
        ]
        for _ in range(rng.randint(1, 4)):
            other = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
            texts.append(
                f"Records from {rng.randint(1500, 1990)} mention the {other} near {place}, "
                f"where the {rng.choice(_TOPICS)} of the region were discussed."
            )
        url = f"{BASE_URL}/articles/{number:04d}-{place.lower()}.html"
        documents.append(Document(url, title, "article", _page(title, _paragraphs(*texts))))
    return documents


def plate_records(spec: CorpusSpec) -> list[tuple[Plate, Document]]:
    """Every gallery plate with its page (the pictures come from ``paint_plate``)."""
    rng = random.Random(f"plates-{spec.seed}")
    out = []
    for number in range(spec.plates):
        plate_id = f"plate-{number:03d}"
        name = f"{rng.choice(_ADJECTIVES).capitalize()} {rng.choice(_NOUNS).capitalize()}"
        title = f"Plate {number}: {name}"
        painter = f"{_place_name(rng)} {_place_name(rng)}"
        year = rng.randint(1800, 1999)
        plate = Plate(
            id=plate_id,
            title=title,
            image_url=f"{BASE_URL}/images/{plate_id}.png",
            page_url=f"{BASE_URL}/gallery/{plate_id}.html",
            file=f"images/{plate_id}.png",
        )
        body = (
            _paragraphs(
                f"{title}. An abstract composition by {painter}, catalogued in {year}.",
                f'The plate is known as "{name}" and is kept in the offline gallery under the '
                f"number {number}.",
            )
            + f'\n<img src="{plate.image_url}" alt="{html.escape(name)}">'
        )
        out.append((plate, Document(plate.page_url, title, "plate", _page(title, body))))
    return out


def paint_plate(spec: CorpusSpec, number: int) -> Image.Image:
    """A deterministic abstract picture: a gradient and 14–26 coloured shapes."""
    rng = random.Random(f"plate-pixels-{spec.seed}-{number}")
    width, height = rng.choice(_PLATE_SIZES)
    start = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    end = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    angle = rng.uniform(0, math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = xs / width * math.cos(angle) + ys / height * math.sin(angle)
    along = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    pixels = start + along[..., None] * (end - start)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    for _ in range(rng.randint(14, 26)):
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        x, y = rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 1.1) * height
        r = rng.uniform(0.03, 0.25) * short
        kind = rng.random()
        if kind < 0.35:
            draw.ellipse((x - r, y - r * rng.uniform(0.5, 1.5), x + r, y + r), fill=colour)
        elif kind < 0.6:
            draw.rectangle(
                (x - r, y - r * rng.uniform(0.3, 1.2), x + r * rng.uniform(0.3, 1.5), y + r),
                fill=colour,
            )
        elif kind < 0.85:
            angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(rng.randint(3, 7)))
            points = [
                (
                    x + r * math.cos(a) * rng.uniform(0.5, 1.3),
                    y + r * math.sin(a) * rng.uniform(0.5, 1.3),
                )
                for a in angles
            ]
            draw.polygon(points, fill=colour)
        else:
            reach = (rng.uniform(-1, 1) * width * 0.6, rng.uniform(-1, 1) * height * 0.6)
            draw.line([(x, y), (x + reach[0], y + reach[1])], fill=colour, width=rng.randint(4, 18))
    return image


def build_corpus(root: str | Path, spec: CorpusSpec | None = None) -> Corpus:
    """Generate the corpus and its indexes into ``root`` (written whole, then renamed)."""
    from tools.search.image_index import build_image_index
    from tools.search.text_index import build_text_index

    spec = spec or CorpusSpec()
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        (work / "images").mkdir()
        plates = plate_records(spec)
        documents = codebook_documents(spec) + [doc for _, doc in plates] + article_documents(spec)
        with (work / "pages.jsonl").open("w", encoding="utf-8") as out:
            for document in documents:
                out.write(json.dumps(asdict(document), ensure_ascii=False) + "\n")
        pictures = []
        for number, (plate, _) in enumerate(plates):
            picture = paint_plate(spec, number)
            picture.save(work / plate.file, format="PNG", optimize=False)
            pictures.append((plate, picture))
        build_text_index(documents, work / "text.sqlite")
        build_image_index(pictures, work / "images.npz")
        manifest = {
            "version": CORPUS_VERSION,
            "spec": asdict(spec),
            "documents": len(documents),
            "plates": [asdict(plate) for plate, _ in plates],
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(work, root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return open_corpus(root)


def open_corpus(root: str | Path) -> Corpus:
    """A built corpus; ``FileNotFoundError`` when ``root`` holds none."""
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text())
    if manifest.get("version") != CORPUS_VERSION:
        raise FileNotFoundError(f"{root} holds a corpus of another version; rebuild it")
    spec = CorpusSpec(**manifest["spec"])
    plates = tuple(Plate(**p) for p in manifest["plates"])
    return Corpus(root, spec, plates)


def cache_dir() -> Path:
    """Where built corpora (and, by default, cached search results) are kept."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "beam_agentic_vlm"


def default_corpus(spec: CorpusSpec | None = None) -> Corpus:
    """The corpus for ``spec`` in the cache folder, built on first use (one builder at a time)."""
    spec = spec or CorpusSpec()
    root = cache_dir() / "corpus" / spec.key
    try:
        return open_corpus(root)
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        pass
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / f".{spec.key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # threads and processes of one machine wait here
        try:
            return open_corpus(root)
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return build_corpus(root, spec)
