"""A tiny BERT classifier and a task it can learn, shared by in-process tests and the script
that `accelerate launch` runs in its own processes."""
import torch
import transformers


def tiny_bert_task():
    """(model, ids, labels, data): a 2-layer BERT, and 256 sequences whose first token decides the label."""
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    ids = torch.randint(3, 50, (256, 8), generator=torch.Generator().manual_seed(0))
    labels = (ids[:, 0] < 25).long()
    return model, ids, labels, [{"input_ids": i, "labels": label} for i, label in zip(ids, labels)]
