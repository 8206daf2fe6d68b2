"""Define a new recurrent cell in a few lines and use it everywhere a built-in cell goes.

The coupled input-forget gate LSTM ("CIFG", Greff et al. 2017, "LSTM: A Search Space Odyssey")
ties the forget gate to the input gate, f = 1 - i: the cell forgets exactly as much as it writes.
It has three gate blocks instead of four, so 25% fewer recurrent parameters, and in Greff et al.'s
study it performs about as well as the full LSTM.

Run: python examples/custom_cell.py
"""

import torch

import lstmkit


class CIFGCell(lstmkit.Cell):
    """LSTM with a coupled input-forget gate."""

    gate_names = ("i", "g", "o")  # one block of hidden_size rows of weight_ih/weight_hh per gate
    state_names = ("h", "c")  # state[0] is always h, the output that is fed back

    def pointwise(self, xg, hg, state):
        # xg = W_ih x_t + b_ih for all steps at once (computed by the layer); hg = W_hh h_{t-1} + b_hh
        h, c = state
        i, g, o = (xg + hg).chunk(3, dim=-1)
        i = torch.sigmoid(i)  # input gate, and 1 - i is the forget gate
        g = torch.tanh(g)  # candidate cell
        o = torch.sigmoid(o)  # output gate
        c = (1 - i) * c + i * g  # c_t = (1 - i) * c_{t-1} + i * g
        h = o * torch.tanh(c)  # h_t = o * tanh(c_t)
        return (h, c), (i, g, o)


def main() -> None:
    torch.manual_seed(0)
    # A stacked, bidirectional layer over the new cell, with lengths and recurrent dropout:
    layer = lstmkit.Recurrent(
        CIFGCell, 8, 16, num_layers=2, bidirectional=True, batch_first=True, recurrent_dropout=0.1
    )
    x = torch.randn(4, 10, 8)
    lengths = [10, 3, 7, 1]
    out, (h_n, c_n), trace = layer(x, lengths=lengths, return_gates=True)
    print(layer)
    print("output", tuple(out.shape), "h_n", tuple(h_n.shape), "c_n", tuple(c_n.shape))
    print("outputs past each length are zero:", bool((out[1, 3:] == 0).all()))
    print("traced gates of layer 0:", sorted(trace["l0"]), "each", tuple(trace["l0"]["i"].shape))

    # It trains like any module: learn to output the running mean of the input's first feature.
    model = lstmkit.Recurrent(CIFGCell, 1, 16, batch_first=True)
    head = torch.nn.Linear(16, 1)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=0.01)
    for step in range(300):
        x = torch.randn(32, 20, 1)
        target = x.cumsum(dim=1) / torch.arange(1, 21).view(1, -1, 1)
        loss = torch.nn.functional.mse_loss(head(model(x)[0]), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == 299:
            print(f"step {step:3d}  running-mean MSE {loss.item():.4f}")
    lstm_params = sum(p.numel() for p in lstmkit.LSTM(1, 16).parameters())
    cifg_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: CIFG {cifg_params} vs LSTM {lstm_params}")


if __name__ == "__main__":
    main()
