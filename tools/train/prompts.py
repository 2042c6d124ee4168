"""The prompts of the Fashion-MNIST text-to-image model: the character table of its tokenizer,
the class prompt of each class, the paraphrases it is trained on, and held-out paraphrases
(never seen in training) that measure how it generalises. Shared by the training script and
tools/scripts/prompt_table.py."""

# Token i + 1 is CHARS[i]; 0 is padding. Prompts are lowercased first (tokenizer.lowercase).
CHARS = "abcdefghijklmnopqrstuvwxyz -'"
LENGTH = 32  # the text encoder's context: longer prompts are truncated

# One class prompt per Fashion-MNIST class (label = index).
CLASS_PROMPTS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]

TRAIN = [
    ["t-shirt", "a t-shirt", "top", "a top", "tee shirt", "a short sleeve top", "a cotton t-shirt"],
    ["trouser", "trousers", "a pair of trousers", "pants", "a pair of pants", "jeans", "long pants"],
    ["pullover", "a pullover", "sweater", "a warm sweater", "jumper", "a knitted jumper", "a wool pullover"],
    ["dress", "a dress", "a summer dress", "a long dress", "gown", "an evening gown", "a short dress"],
    ["coat", "a coat", "a winter coat", "jacket", "a long coat", "a warm jacket", "an overcoat"],
    ["sandal", "sandals", "a sandal", "a pair of sandals", "summer sandals", "flip flops", "an open shoe"],
    ["shirt", "a shirt", "a button shirt", "a long sleeve shirt", "blouse", "a collared shirt", "a work shirt"],
    ["sneaker", "a sneaker", "sneakers", "a running shoe", "trainers", "a sports shoe", "a canvas sneaker"],
    ["bag", "a bag", "a handbag", "a purse", "a shopping bag", "a leather bag", "a tote bag"],
    ["ankle boot", "an ankle boot", "a boot", "boots", "a leather boot", "a winter boot", "ankle boots"],
]

# Held out: new combinations of words seen in training, one per class.
HELD_OUT = ["a cotton tee shirt", "a pair of jeans", "a knitted sweater", "a long summer dress",
            "a long winter jacket", "a pair of flip flops", "a collared work shirt", "a pair of running shoes",
            "a leather handbag", "a pair of leather boots"]


def tokenize(text):
    """Token ids of a prompt, padded with 0 to LENGTH (what scorch's chars tokenizer does)."""
    ids = [CHARS.index(c) + 1 for c in text.lower()[:LENGTH]]
    return ids + [0] * (LENGTH - len(ids))
