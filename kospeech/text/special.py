"""The special-token contract shared by every tokenizer, model and search.

Fixed ids keep checkpoints, CTC blanks and padding consistent across unit types: a model
trained on jamo and one trained on subwords agree on what id 0 means.
"""

BLANK = "<blank>"
PAD = "<pad>"
SOS = "<sos>"
EOS = "<eos>"
UNK = "<unk>"

SPECIAL_TOKENS: tuple[str, ...] = (BLANK, PAD, SOS, EOS, UNK)
BLANK_ID, PAD_ID, SOS_ID, EOS_ID, UNK_ID = range(len(SPECIAL_TOKENS))
NUM_SPECIAL = len(SPECIAL_TOKENS)
