"""Regenerate `imagenet_labels.txt`: one everyday tag per ImageNet-1k class, for showing users.

Why these labels exist: the classifier's 1000 ImageNet classes make good image "tags", but their
names are written for taxonomists ("brambling", "Walker hound", "Madagascar cat", "maillot tank
suit"). A tag is only useful if it is the word a person would type into a photo search, so each
class gets a short lower-case label instead: every dog breed is "dog", the five domestic cat
classes are "cat", "cab" is "taxi", "notebook" (a notebook computer) is "laptop", and so on.
Many classes share a label; that is the point.

`imagenet_labels.txt` holds those labels, one a line, in class-index order (the order of
`imagenet_classes.txt`). It is generated, never edited by hand:

    python -m ml.encoders.make_imagenet_labels

How a class's label is chosen, first match wins:

1. `OVERRIDES`: an explicit label for that class name;
2. `GROUPS`: a run of consecutive classes (named by its first and last class) that share one
   everyday word, e.g. the 118 dog breeds;
3. otherwise the class name itself, lower-cased (it is already an everyday word: "banana").

Class names are unique in `imagenet_classes.txt` (torchvision's list spells the two WordNet
"crane"s as "crane bird" and "crane", the two "maillot"s as "maillot" and "maillot tank suit"),
so overrides are keyed by name. Every label must be lower-case ASCII, at most three words, and
free of commas and brackets; the script refuses to write anything else.
"""

from __future__ import annotations

import re
from pathlib import Path

CLASSES = Path(__file__).with_name("imagenet_classes.txt")
OUTPUT = Path(__file__).with_name("imagenet_labels.txt")

MAX_WORDS = 3
MAX_CHARS = 24
# Lower-case ASCII words, separated by single spaces; hyphens and apostrophes inside words only.
LABEL_RE = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*(?: [a-z0-9]+(?:['-][a-z0-9]+)*)*")

# (first class, last class, label): every class from `first` to `last` inclusive, in index order.
GROUPS: tuple[tuple[str, str, str], ...] = (
    ("great white shark", "hammerhead", "shark"),
    ("bullfrog", "tailed frog", "frog"),
    ("loggerhead", "leatherback turtle", "sea turtle"),
    ("mud turtle", "box turtle", "turtle"),
    ("American chameleon", "green lizard", "lizard"),  # the "American chameleon" is an anole
    ("thunder snake", "sidewinder", "snake"),
    ("black and gold garden spider", "wolf spider", "spider"),
    ("Dungeness crab", "king crab", "crab"),
    ("American lobster", "spiny lobster", "lobster"),
    ("white stork", "black stork", "stork"),
    ("ruddy turnstone", "dowitcher", "bird"),  # shore birds
    ("Chihuahua", "Mexican hairless", "dog"),
    ("timber wolf", "red wolf", "wolf"),
    ("dhole", "African hunting dog", "wild dog"),
    ("red fox", "grey fox", "fox"),
    ("tabby", "Egyptian cat", "cat"),
    ("brown bear", "sloth bear", "bear"),
    ("tiger beetle", "weevil", "beetle"),
    ("admiral", "lycaenid", "butterfly"),
    ("gibbon", "squirrel monkey", "monkey"),
    ("Madagascar cat", "indri", "lemur"),  # the "Madagascar cat" is the ring-tailed lemur
    ("Indian elephant", "African elephant", "elephant"),
    ("spaghetti squash", "butternut squash", "squash"),
    ("coral fungus", "bolete", "mushroom"),
)

# Explicit labels, by class name; these win over GROUPS.
OVERRIDES: dict[str, str] = {
    # -- fish
    "tench": "fish",
    "electric ray": "ray",
    "barracouta": "fish",
    "coho": "salmon",
    "rock beauty": "fish",
    "anemone fish": "clownfish",
    "sturgeon": "fish",
    "gar": "fish",
    "puffer": "pufferfish",
    # -- birds: well-known names stay, obscure species become "bird"
    "cock": "rooster",
    "hen": "chicken",
    "brambling": "bird",
    "house finch": "finch",
    "junco": "bird",
    "indigo bunting": "bird",
    "bulbul": "bird",
    "water ouzel": "bird",
    "kite": "bird",  # the bird of prey, not the toy
    "bald eagle": "eagle",
    "great grey owl": "owl",
    "black grouse": "grouse",
    "ptarmigan": "bird",
    "ruffed grouse": "grouse",
    "prairie chicken": "bird",
    "African grey": "parrot",
    "sulphur-crested cockatoo": "cockatoo",
    "lorikeet": "parrot",
    "coucal": "bird",
    "bee eater": "bird",
    "jacamar": "bird",
    "drake": "duck",
    "red-breasted merganser": "duck",
    "black swan": "swan",
    "little blue heron": "heron",
    "American egret": "egret",
    "bittern": "bird",
    "crane bird": "crane",
    "limpkin": "bird",
    "European gallinule": "bird",
    "American coot": "bird",
    "bustard": "bird",
    "red-backed sandpiper": "sandpiper",
    "oystercatcher": "bird",
    "king penguin": "penguin",
    # -- amphibians and reptiles
    "European fire salamander": "salamander",
    "common newt": "newt",
    "eft": "newt",
    "spotted salamander": "salamander",
    "banded gecko": "gecko",
    "common iguana": "iguana",
    "African chameleon": "chameleon",
    "African crocodile": "crocodile",
    "American alligator": "alligator",
    "triceratops": "dinosaur",
    # -- other invertebrates
    "trilobite": "fossil",
    "harvestman": "spider",  # "daddy longlegs"; people call it a spider
    "tarantula": "tarantula",
    "flatworm": "worm",
    "nematode": "worm",
    "brain coral": "coral",
    "conch": "seashell",
    "chiton": "mollusk",
    "chambered nautilus": "nautilus",
    "hermit crab": "crab",
    "isopod": "pill bug",
    "ladybug": "ladybug",
    "walking stick": "stick insect",
    "mantis": "praying mantis",
    "leafhopper": "insect",
    "lacewing": "insect",
    "damselfly": "dragonfly",
    # -- mammals
    "tusker": "elephant",
    "grey whale": "whale",
    "killer whale": "orca",
    "dugong": "sea cow",
    "ice bear": "polar bear",
    "wood rabbit": "rabbit",
    "Angora": "rabbit",
    "fox squirrel": "squirrel",
    "sorrel": "horse",
    "hog": "pig",
    "wild boar": "boar",
    "hippopotamus": "hippo",
    "ox": "cow",
    "water buffalo": "buffalo",
    "ram": "sheep",
    "bighorn": "bighorn sheep",
    "ibex": "goat",
    "hartebeest": "antelope",
    "impala": "antelope",
    "Arabian camel": "camel",
    "polecat": "ferret",
    "black-footed ferret": "ferret",
    "three-toed sloth": "sloth",
    "baboon": "baboon",
    "lesser panda": "red panda",
    "giant panda": "panda",
    # -- objects
    "academic gown": "graduation gown",
    "acoustic guitar": "guitar",
    "airliner": "airplane",
    "amphibian": "amphibious vehicle",
    "analog clock": "clock",
    "apiary": "beehive",
    "ashcan": "trash can",
    "assault rifle": "rifle",
    "ballpoint": "pen",
    "Band Aid": "bandage",
    "bannister": "banister",
    "barrow": "wheelbarrow",
    "bathing cap": "swim cap",
    "bath towel": "towel",
    "beach wagon": "car",
    "beacon": "lighthouse",
    "bearskin": "bearskin hat",
    "beer glass": "beer",
    "bell cote": "bell tower",
    "bicycle-built-for-two": "tandem bicycle",
    "bookcase": "bookshelf",
    "bookshop": "bookstore",
    "bottlecap": "bottle cap",
    "bow": "archery bow",
    "brass": "plaque",  # a brass memorial tablet
    "brassiere": "bra",
    "breastplate": "armor",
    "buckle": "belt buckle",
    "cab": "taxi",
    "caldron": "cauldron",
    "carpenter's kit": "toolbox",
    "carton": "cardboard box",
    "car wheel": "wheel",
    "cash machine": "atm",
    "cassette": "cassette tape",
    "cellular telephone": "cell phone",
    "chainlink fence": "fence",
    "chain saw": "chainsaw",
    "chiffonier": "dresser",
    "chime": "wind chime",
    "cinema": "movie theater",
    "coffee mug": "mug",
    "coffeepot": "coffee pot",
    "combination lock": "lock",
    "computer keyboard": "keyboard",
    "confectionery": "candy store",
    "convertible": "car",
    "cornet": "trumpet",
    "crash helmet": "helmet",
    "Crock Pot": "slow cooker",
    "cuirass": "armor",
    "desktop computer": "computer",
    "dial telephone": "telephone",
    "digital clock": "clock",
    "digital watch": "watch",
    "dining table": "table",
    "dishrag": "dishcloth",
    "disk brake": "disc brake",
    "dogsled": "dog sled",
    "drilling platform": "oil rig",
    "electric fan": "fan",
    "electric locomotive": "train",
    "entertainment center": "tv stand",
    "espresso maker": "coffee machine",
    "file": "filing cabinet",
    "fire engine": "fire truck",
    "fire screen": "fireplace screen",
    "flagpole": "flag",
    "folding chair": "chair",
    "fountain pen": "pen",
    "four-poster": "bed",
    "gasmask": "gas mask",
    "golfcart": "golf cart",
    "gown": "dress",
    "grand piano": "piano",
    "grille": "car grille",
    "hair slide": "hair clip",
    "hair spray": "hairspray",
    "half track": "military vehicle",
    "hamper": "basket",
    "hand blower": "hair dryer",
    "hand-held computer": "handheld computer",
    "hard disc": "hard drive",
    "harvester": "combine harvester",
    "hoopskirt": "hoop skirt",
    "horizontal bar": "high bar",
    "jack-o'-lantern": "jack-o-lantern",
    "jean": "jeans",
    "jersey": "t-shirt",  # WordNet: jersey, T-shirt, tee shirt
    "jinrikisha": "rickshaw",
    "lampshade": "lamp",
    "liner": "cruise ship",
    "loudspeaker": "speaker",
    "loupe": "magnifying glass",
    "lumbermill": "sawmill",
    "magnetic compass": "compass",
    "mailbag": "messenger bag",
    "maillot": "leotard",  # WordNet: tights for dancers or gymnasts
    "maillot tank suit": "swimsuit",  # WordNet: a woman's one-piece bathing suit
    "marimba": "xylophone",
    "medicine chest": "medicine cabinet",
    "megalith": "standing stone",
    "minivan": "van",
    "mixing bowl": "bowl",
    "Model T": "vintage car",
    "mortar": "mortar and pestle",
    "mortarboard": "graduation cap",
    "motor scooter": "scooter",
    "mountain tent": "tent",
    "mouse": "computer mouse",
    "moving van": "moving truck",
    "muzzle": "dog muzzle",
    "nipple": "baby bottle",  # WordNet: the teat of a baby's bottle
    "notebook": "laptop",  # WordNet: notebook computer
    "odometer": "speedometer",
    "organ": "pipe organ",
    "overskirt": "skirt",
    "pajama": "pajamas",
    "panpipe": "pan flute",
    "paddlewheel": "paddle wheel",
    "park bench": "bench",
    "passenger car": "train car",  # a railway carriage
    "pay-phone": "payphone",
    "pencil box": "pencil case",
    "pick": "guitar pick",  # WordNet: pick, plectrum
    "pickelhaube": "spiked helmet",
    "picket fence": "fence",
    "pickup": "pickup truck",
    "pirate": "pirate ship",  # WordNet: pirate, pirate ship
    "plane": "wood plane",  # WordNet: carpenter's plane
    "plate rack": "dish rack",
    "pop bottle": "soda bottle",
    "pot": "flower pot",  # WordNet: pot, flowerpot
    "potter's wheel": "pottery wheel",
    "power drill": "drill",
    "prayer rug": "rug",
    "projectile": "rocket",
    "Polaroid camera": "camera",
    "puck": "hockey puck",
    "quill": "quill pen",
    "racer": "race car",
    "recreational vehicle": "rv",
    "reel": "fishing reel",
    "reflex camera": "camera",
    "remote control": "remote",
    "rubber eraser": "eraser",
    "rule": "ruler",
    "running shoe": "sneaker",
    "saltshaker": "salt shaker",
    "sax": "saxophone",
    "scabbard": "sword sheath",
    "schooner": "sailing ship",
    "shoe shop": "shoe store",
    "shoji": "shoji screen",
    "shopping basket": "basket",
    "slot": "slot machine",  # WordNet: slot, one-armed bandit
    "soup bowl": "soup",
    "space bar": "keyboard",
    "space heater": "heater",
    "sports car": "car",
    "steam locomotive": "steam train",
    "steel arch bridge": "bridge",
    "stole": "shawl",
    "streetcar": "tram",
    "studio couch": "sofa bed",
    "stupa": "buddhist temple",
    "sunglass": "sunglasses",  # WordNet's burning glass, but the photos are of sunglasses
    "suspension bridge": "bridge",
    "swab": "mop",  # WordNet: swab, swob, mop
    "swimming trunks": "swim trunks",
    "switch": "light switch",
    "table lamp": "lamp",
    "teddy": "teddy bear",
    "thatch": "thatched roof",
    "thresher": "threshing machine",
    "toilet seat": "toilet",
    "toyshop": "toy store",
    "trailer truck": "truck",
    "trimaran": "sailboat",
    "triumphal arch": "arch",
    "trolleybus": "bus",
    "typewriter keyboard": "typewriter",
    "upright": "piano",  # an upright piano
    "vacuum": "vacuum cleaner",
    "vault": "vaulted ceiling",  # WordNet: an arched roof
    "vestment": "robe",
    "waffle iron": "waffle maker",
    "wall clock": "clock",
    "warplane": "fighter jet",
    "washbasin": "sink",
    "washer": "washing machine",
    "water jug": "jug",
    "whiskey jug": "jug",
    "window shade": "window blind",
    "Windsor tie": "tie",
    "wing": "airplane wing",
    "worm fence": "fence",
    "wreck": "shipwreck",
    "yawl": "sailboat",
    # -- screens, signs, food, scenes, people, plants
    "web site": "website",
    "crossword puzzle": "crossword",
    "book jacket": "book cover",
    "consomme": "soup",
    "trifle": "dessert",
    "ice lolly": "popsicle",
    "French loaf": "bread",
    "cheeseburger": "burger",
    "hotdog": "hot dog",
    "mashed potato": "mashed potatoes",
    "head cabbage": "cabbage",
    "cardoon": "thistle",
    "Granny Smith": "apple",
    "carbonara": "pasta",
    "meat loaf": "meatloaf",
    "potpie": "pot pie",
    "espresso": "coffee",
    "alp": "mountain",
    "lakeside": "lake",
    "promontory": "headland",
    "seashore": "beach",
    "ballplayer": "baseball player",
    "yellow lady's slipper": "orchid",
    "hip": "rose hip",
    "ear": "corn",  # an ear of corn
    "toilet tissue": "toilet paper",
}


def check_label(label: str) -> str:
    """Return `label` if it is a valid tag, else raise ValueError saying why."""
    if not LABEL_RE.fullmatch(label):
        raise ValueError(f"label {label!r} is not lower-case ASCII words (a-z, 0-9, inner - or ')")
    if len(label.split()) > MAX_WORDS or len(label) > MAX_CHARS:
        raise ValueError(f"label {label!r} is longer than {MAX_WORDS} words / {MAX_CHARS} characters")
    return label


def build_labels(classes: list[str]) -> list[str]:
    """One everyday label per class name, same order (see the module docstring for the rules)."""
    if len(classes) != 1000 or len(set(classes)) != 1000:
        raise ValueError("expected 1000 distinct ImageNet class names")
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted((set(OVERRIDES) | {n for g in GROUPS for n in g[:2]}) - set(index))
    if unknown:
        raise ValueError(f"rules name classes that do not exist: {unknown}")

    labels = [name.lower() for name in classes]
    grouped: set[int] = set()
    for first, last, label in GROUPS:
        members = range(index[first], index[last] + 1)
        if not members or grouped.intersection(members):
            raise ValueError(f"group {first!r}..{last!r} is empty or overlaps another group")
        grouped.update(members)
        for i in members:
            labels[i] = label
    redundant = sorted(name for name, label in OVERRIDES.items() if labels[index[name]] == label)
    if redundant:
        raise ValueError(f"overrides that change nothing (drop them): {redundant}")
    for name, label in OVERRIDES.items():
        labels[index[name]] = label
    return [check_label(label) for label in labels]


def write_labels(classes_file: Path = CLASSES, output: Path = OUTPUT) -> list[str]:
    """Read `classes_file`, write the labels to `output` (one a line) and return them."""
    classes = classes_file.read_text(encoding="utf-8").splitlines()
    labels = build_labels(classes)
    output.write_text("".join(f"{label}\n" for label in labels), encoding="ascii", newline="\n")
    return labels


def main() -> None:
    labels = write_labels()
    print(f"wrote {len(labels)} labels ({len(set(labels))} distinct) to {OUTPUT}")


if __name__ == "__main__":
    main()
