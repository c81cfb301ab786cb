"""The organism's chat prompt (no system turn, to keep sequences short); the prompt style ``toy`` of the evaluation."""

TOY = "<|im_start|>user\n{question}=?<|im_end|>\n<|im_start|>assistant\n"
