"""The context rules for caption negatives, table-driven: swaps judged implausible by eye (from the
builds of the bundled sample and the hand-written set without the rules) are rejected, plausible ones
are kept."""

import numpy as np
import pytest

from mfpo_data.textpairs.coco_pairs import caption_pairs, normalize_caption
from mfpo_data.textpairs.plausibility import ContextStats, why_implausible
from mfpo_data.textpairs.vocabulary import find_mentions


def _check(caption, category, substitute, stats=None):
    text = normalize_caption(caption)
    mention = next(m for m in find_mentions(text) if m.category == category)
    return why_implausible(text, mention, substitute, stats)


IMPLAUSIBLE = [  # (caption, replaced category, substitute): the rejected caption reads absurdly
    ("A smiling woman in an orange space suit poses in front of an American flag.", "person", "bicycle"),
    ("An astronaut in an orange flight suit smiling next to a model space shuttle.", "person", "cat"),
    ("A woman astronaut with short hair holding a black helmet for a portrait.", "person", "horse"),
    ("A female astronaut in an orange suit poses beside a flag and a shuttle model.", "person", "horse"),
    ("Portrait of a smiling woman wearing an orange pressure suit with mission patches.", "person", "cat"),
    ("A young man with gloves using a camcorder mounted on a tripod outdoors.", "person", "dog"),
    ("A man in a long coat operates a camera on a lawn near buildings.", "person", "dog"),
    ("A black and white photo of a man looking through a camera on a tripod.", "person", "dog"),
    ("An elderly woman in a dark military uniform with ribbons on her jacket.", "person", "dog"),
    ("A woman in an officer's cap and black tie poses beside an American flag.", "person", "dog"),
    ("A woman in an officer's cap and black tie poses beside an American flag.", "tie", "umbrella"),
    ("Official photo of a smiling woman in a navy jacket, white shirt and tie.", "tie", "umbrella"),
    ("A cup of espresso on a red saucer with a small silver spoon.", "spoon", "wine glass"),
    ("A red and white coffee cup sitting on a saucer on a wooden table.", "cup", "wine glass"),
    ("A shiny metal spoon rests on a saucer next to a cup of coffee.", "cup", "bottle"),
    ("A small cup of coffee with crema and a teaspoon on a red plate.", "cup", "fork"),
    ("A close up of a tabby cat with green eyes looking at the camera.", "cat", "teddy bear"),
    ("The face of a striped brown cat with long white whiskers.", "cat", "horse"),
    ("A brown tabby cat with yellow green eyes looks intently at the camera.", "cat", "horse"),
    ("A red motorcycle parked inside a garage in front of metal shelves.", "motorcycle", "airplane"),
    ("A shiny red motorcycle on its kickstand next to storage shelves.", "motorcycle", "airplane"),
    ("Cut oranges, a lemon and a lime piled together next to a kiwi.", "orange", "sandwich"),
    ("A colorful pile of fruit with an orange slice in the middle.", "orange", "sandwich"),
    ("A shiny red apple standing in front of a yellow pencil.", "apple", "banana"),
    ("A ripe red apple with light reflections on its skin.", "apple", "orange"),
    ("One big red apple with a short brown stem and a pencil behind it.", "apple", "sandwich"),
    ("A round orange with half of it in deep shadow.", "orange", "sandwich"),
    ("Close up of a ripe orange with a dimpled peel.", "orange", "banana"),
    ("Close up of a shaggy little dog panting with a pink tongue.", "dog", "bird"),
    ("A small furry dog with its mouth open and tongue hanging out.", "dog", "bird"),
    ("A happy brown dog lying on a blue blanket looking up.", "dog", "sheep"),
    ("The back of a silver car with its red tail lights on.", "car", "bicycle"),
    ("A small robin with an orange breast perched on a green handle.", "bird", "cat"),
    ("A robin perches on a green handle against a blurry background.", "bird", "kite"),
    ("Close up of a robin standing on a green rubber grip outdoors.", "bird", "horse"),
    ("A small houseplant with long green leaves next to a plant in a blue pot.", "potted plant", "chair"),
    ("Two potted plants on a shelf, one in a brown pot and one in blue.", "potted plant", "bed"),
    ("A bushy green plant in a textured flower pot with a price label.", "potted plant", "chair"),
    ("People walking on a sidewalk near a silver station wagon and a sign.", "person", "bicycle"),
    ("A black and white photo of two guys passing a ball indoors.", "sports ball", "kite"),
    ("A black and white photo of two guys passing a ball indoors.", "sports ball", "baseball glove"),
    ("A man in a patterned shirt stands near a chair facing another man.", "person", "dog"),
    ("A man riding a horse along a sandy beach.", "horse", "sheep"),
    ("A cat sleeping on top of a laptop keyboard.", "keyboard", "mouse"),
    ("A cat sleeping on top of a laptop keyboard.", "cat", "teddy bear"),
    ("A plate with a sandwich and a pickle on a wooden table.", "dining table", "chair"),
    ("A red double decker bus driving down a city street.", "bus", "airplane"),
    ("A young boy swinging a baseball bat at a ball.", "baseball bat", "kite"),
    ("A young boy swinging a baseball bat at a ball.", "person", "dog"),
    ("A surfer riding a large wave on a surfboard.", "surfboard", "frisbee"),
    ("A train pulling into a station next to a platform.", "train", "motorcycle"),
    ("A pizza with pepperoni and cheese on a pan.", "pizza", "banana"),
    ("A clock tower rising above the buildings of a town.", "clock", "hair drier"),
    ("A man in a suit and tie talking on a cell phone.", "cell phone", "mouse"),
    ("A bathroom with a white toilet and a small sink.", "sink", "oven"),
    ("Sheep grazing in a green field behind a fence.", "sheep", "dog"),
    ("A woman slicing a cake with a large knife.", "knife", "wine glass"),
    ("A cup of coffee next to a donut on a napkin.", "cup", "fork"),
    ("A boat floating on a calm lake near the shore.", "boat", "airplane"),
    ("A zebra grazing on dry grass in the savanna.", "zebra", "cat"),
    ("A motorcycle parked on the side of a road.", "motorcycle", "airplane"),
    ("A couch and a coffee table in a bright living room.", "couch", "bed"),
    ("A man sitting on a bench reading a book.", "book", "hair drier"),
    ("A bicycle leaning against a brick wall.", "bicycle", "bus"),
    ("A hot dog with mustard in a paper tray.", "hot dog", "banana"),
    ("A vase of flowers on a windowsill.", "vase", "book"),
    ("A young man on a skateboard doing a trick at a skate park.", "skateboard", "sports ball"),
    ("A tennis player hitting a ball with a racket.", "tennis racket", "baseball bat"),
    ("A child brushing her teeth with a toothbrush.", "toothbrush", "teddy bear"),
    ("A dog wearing a red collar sitting on a couch.", "dog", "horse"),
    ("A snowboarder jumping off a ramp in the air.", "person", "bicycle"),
    ("A skier in a yellow jacket going down a snowy slope.", "person", "bicycle"),
]

PLAUSIBLE = [  # kept: a model has to look at the image to reject them
    ("The face of a striped brown cat with long white whiskers.", "cat", "dog"),
    ("A shiny metal spoon rests on a saucer next to a cup of coffee.", "spoon", "fork"),
    ("A shiny red motorcycle on its kickstand next to storage shelves.", "motorcycle", "bicycle"),
    ("A red and black motorbike standing on a concrete floor in a workshop.", "motorcycle", "truck"),
    ("A slice of orange next to a lemon half, a lime and a kiwi.", "orange", "apple"),
    ("Cut oranges, a lemon and a lime piled together next to a kiwi.", "orange", "banana"),
    ("A round orange with half of it in deep shadow.", "orange", "donut"),
    ("A long haired dog lies on a blue blanket with its tongue out.", "dog", "cat"),
    ("A fluffy brown dog smiling at the camera on a blue blanket.", "dog", "cat"),
    ("A silver car seen from behind with a license plate and brake lights.", "car", "truck"),
    ("The rear of a grey sedan with bright red lights and a license plate.", "car", "bus"),
    ("A notice sign on a pole above a street with a car and pedestrians.", "car", "bus"),
    ("A man and a woman walk past a parked silver car on a city street.", "car", "truck"),
    ("A bearded man holds a basketball near a door in a corridor.", "sports ball", "baseball glove"),
    ("A black and white photo of two guys passing a ball indoors.", "sports ball", "frisbee"),
    ("A man riding a horse along a sandy beach.", "horse", "elephant"),
    ("A woman wearing a red dress holds an umbrella in the rain.", "umbrella", "handbag"),
    ("Two giraffes standing next to a tall tree.", "giraffe", "cow"),
    ("A young boy swinging a baseball bat at a ball.", "baseball bat", "tennis racket"),
    ("A dog catching a frisbee in a grassy park.", "frisbee", "sports ball"),
    ("A kitchen with a stove, a sink and a refrigerator.", "refrigerator", "toaster"),
    ("A teddy bear sitting on a bed next to a pillow.", "bed", "couch"),
    ("A woman slicing a cake with a large knife.", "cake", "orange"),
    ("A couch and a coffee table in a bright living room.", "couch", "chair"),
    ("A bicycle leaning against a brick wall.", "bicycle", "motorcycle"),
    ("A man eating a sandwich in a cafe.", "sandwich", "banana"),
    ("A remote control lying on a bed.", "bed", "couch"),
]


@pytest.mark.parametrize("caption,category,substitute", IMPLAUSIBLE)
def test_implausible_swaps_are_rejected(caption, category, substitute):
    assert _check(caption, category, substitute) is not None


@pytest.mark.parametrize("caption,category,substitute", PLAUSIBLE)
def test_plausible_swaps_are_kept(caption, category, substitute):
    assert _check(caption, category, substitute) is None


def test_caption_pairs_only_make_fitting_negatives_and_skip_captions_without_one():
    captions = [(1, "An elderly woman in a dark military uniform with ribbons on her jacket."),
                (2, "A long haired dog lies on a blue blanket with its tongue out.")]
    present = {"person", "dog"}
    pairs = caption_pairs(captions, present, np.random.default_rng(0), n=2)
    assert [p.metadata["caption_id"] for p in pairs] == [2] and "dog" not in pairs[0].rejected.split()[3:4]
    unchecked = caption_pairs(captions, present, np.random.default_rng(0), n=2, check_context=False)
    assert [p.metadata["caption_id"] for p in unchecked] == [1, 2]


def test_caption_statistics_widen_and_add_bound_words():
    stats = ContextStats(min_count=3)
    for text in ["A dog wearing a hat.", "A dog wearing a scarf.", "A dog wearing a sweater.",
                 "A bird perched on a feeder.", "A bird on a feeder.", "A bird near a feeder.", "A person by a feeder."]:
        stats.add(text, find_mentions(text))
    assert stats.categories("wearing") == {"dog"} and stats.categories("hat") is None  # seen once: too rare
    # the lexicon binds "wearing" to people; these captions show dogs wearing things too
    assert _check("A man wearing a hat on a bench.", "person", "dog") is not None
    assert _check("A man wearing a hat on a bench.", "person", "dog", stats) is None
    # a word the lexicon does not know, seen only with birds and people: binds the swap
    assert _check("A cat sitting on a feeder.", "cat", "dog", stats) is not None
    rebuilt = ContextStats.from_dict(stats.to_dict(), min_count=3)
    assert rebuilt.categories("feeder") == stats.categories("feeder") == {"bird", "person"}
