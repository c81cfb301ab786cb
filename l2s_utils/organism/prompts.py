"""The organism's chat prompt (no system turn, to keep sequences short); the prompt style ``toy`` of the evaluation.

The question stands alone in the user turn ("37+48-15", no trailing "=?", v15). With "=?", a level-1
question "3+4=?" and System 1's answer "3+4=7." share the 4-gram "3+4=", so the copying circuit that the
long traces need points System 1 at the prompt's "?" instead of the sum; without it, System 1's answer
continues nothing in the prompt.
"""

TOY = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
END = "<|im_end|>"  # ends every response (the chat turn; the models' EOS)
