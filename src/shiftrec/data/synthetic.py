"""A seeded synthetic store with planted interest shifts (ground truth kept) for demo and tests."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shiftrec.data.splits import EvalSet, IdMap, Seqs, SeqSplit
from shiftrec.manifest import make_manifest, write_json

DEPARTMENTS: dict[str, dict[str, list[str]]] = {
    "Home > Kitchen": {"nouns": ["Chef Knife", "Frying Pan", "Cutting Board", "Espresso Maker",
                                 "Mixing Bowl", "Spice Rack", "Dutch Oven", "Whisk"],
                       "brands": ["CookRight", "Ferro", "Oakline"]},
    "Home > Garden": {"nouns": ["Garden Hose", "Pruning Shears", "Planter", "Watering Can",
                                "Seed Kit", "Trowel", "Compost Bin", "Lawn Sprinkler"],
                      "brands": ["GreenLeaf", "Terra", "Bloomwell"]},
    "Electronics > Audio": {"nouns": ["Wireless Earbuds", "Bluetooth Speaker", "Headphones",
                                      "Soundbar", "Turntable", "Microphone", "DAC Amplifier", "Radio"],
                            "brands": ["Sonix", "Auralis", "BassCo"]},
    "Electronics > Computers": {"nouns": ["Laptop Stand", "Mechanical Keyboard", "Wireless Mouse",
                                          "USB-C Hub", "Monitor", "Webcam", "SSD Drive", "Router"],
                                "brands": ["Bytewise", "Corelink", "Pixelon"]},
    "Fashion > Shoes": {"nouns": ["Running Shoes", "Leather Boots", "Sneakers", "Sandals",
                                  "Loafers", "Hiking Boots", "Slippers", "Trail Runners"],
                        "brands": ["Stride", "Urbanfoot", "Peakline"]},
    "Fashion > Outerwear": {"nouns": ["Rain Jacket", "Down Parka", "Fleece Vest", "Wool Coat",
                                      "Windbreaker", "Denim Jacket", "Softshell", "Trench Coat"],
                            "brands": ["Northway", "Driftwear", "Caldera"]},
    "Sports > Fitness": {"nouns": ["Yoga Mat", "Dumbbell Set", "Resistance Bands", "Kettlebell",
                                   "Jump Rope", "Foam Roller", "Pull-up Bar", "Exercise Ball"],
                         "brands": ["Flexo", "IronPeak", "Vitalis"]},
    "Sports > Cycling": {"nouns": ["Bike Helmet", "Cycling Gloves", "Bike Light", "Water Bottle Cage",
                                   "Saddle", "Bike Lock", "Tire Pump", "Cycling Jersey"],
                         "brands": ["Velora", "Spokeman", "Gearo"]},
    "Baby > Nursery": {"nouns": ["Baby Monitor", "Crib Sheet", "Swaddle Blanket", "Night Light",
                                 "Changing Pad", "Baby Bouncer", "Mobile", "Diaper Caddy"],
                       "brands": ["Littlenest", "Cozybub", "Dreamy"]},
    "Toys > Games": {"nouns": ["Board Game", "Puzzle", "Card Game", "Building Blocks",
                               "Chess Set", "Trivia Game", "Dice Set", "Marble Run"],
                     "brands": ["Playwell", "Brainy", "Tinker"]},
    "Beauty > Skincare": {"nouns": ["Face Serum", "Moisturizer", "Sunscreen", "Cleanser",
                                    "Eye Cream", "Face Mask", "Toner", "Lip Balm"],
                          "brands": ["Lumea", "Pureskin", "Velvetta"]},
    "Pets > Dogs": {"nouns": ["Dog Leash", "Chew Toy", "Dog Bed", "Treat Pouch",
                              "Dog Harness", "Food Bowl", "Grooming Brush", "Dog Shampoo"],
                    "brands": ["Pawsome", "Barkley", "Furbish"]},
}
ADJECTIVES = ["Classic", "Premium", "Compact", "Deluxe", "Eco", "Pro", "Ultra", "Lightweight",
              "Vintage", "Smart", "Essential", "Rugged", "Modern", "Mini", "Heavy-Duty", "Soft"]
COLOURS = ["Black", "White", "Blue", "Red", "Green", "Grey", "Navy", "Olive", "Sand", "Pink"]

# The same store in Chinese (a Chinese e-commerce platform): one entry per English department,
# in the same order, with as many nouns, brands, adjectives and colours (so a seed draws the
# same structure in both languages). Titles follow the usual Chinese listing order without
# spaces: brand + adjective + product + colour, e.g. "厨艺精选款厨师刀黑色".
DEPARTMENTS_ZH: dict[str, dict[str, list[str]]] = {
    "家居 > 厨房": {"nouns": ["厨师刀", "煎锅", "砧板", "意式咖啡机", "搅拌碗", "调料架", "铸铁锅",
                              "打蛋器"],
                    "brands": ["厨艺", "铁匠", "橡木坊"]},
    "家居 > 园艺": {"nouns": ["浇花水管", "修枝剪", "花盆", "洒水壶", "种子套装", "园艺铲", "堆肥桶",
                              "草坪喷头"],
                    "brands": ["绿叶", "大地", "花开"]},
    "数码 > 音频": {"nouns": ["无线耳机", "蓝牙音箱", "头戴耳机", "回音壁", "黑胶唱机", "麦克风",
                              "解码耳放", "收音机"],
                    "brands": ["声匠", "音悦", "低音炮"]},
    "数码 > 电脑": {"nouns": ["笔记本支架", "机械键盘", "无线鼠标", "扩展坞", "显示器", "摄像头",
                              "固态硬盘", "路由器"],
                    "brands": ["比特", "芯联", "像素"]},
    "服饰 > 鞋靴": {"nouns": ["跑步鞋", "皮靴", "运动鞋", "凉鞋", "乐福鞋", "登山靴", "拖鞋", "越野跑鞋"],
                    "brands": ["步履", "都市足", "峰线"]},
    "服饰 > 外套": {"nouns": ["冲锋衣", "羽绒服", "抓绒马甲", "羊毛大衣", "风衣", "牛仔外套",
                              "软壳衣", "风雨衣"],
                    "brands": ["北途", "漂流", "火山"]},
    "运动 > 健身": {"nouns": ["瑜伽垫", "哑铃", "弹力带", "壶铃", "跳绳", "泡沫轴", "引体向上杆", "健身球"],
                    "brands": ["弹力", "铁峰", "元气"]},
    "运动 > 骑行": {"nouns": ["骑行头盔", "骑行手套", "自行车灯", "水壶架", "车座", "自行车锁",
                              "打气筒", "骑行服"],
                    "brands": ["飞轮", "辐条", "齿轮"]},
    "母婴 > 婴儿房": {"nouns": ["婴儿监视器", "床笠", "襁褓毯", "小夜灯", "尿布台垫", "婴儿摇椅",
                                "床铃", "尿布收纳盒"],
                      "brands": ["小窝", "暖宝", "梦乡"]},
    "玩具 > 游戏": {"nouns": ["桌游", "拼图", "纸牌游戏", "积木", "国际象棋", "知识问答", "骰子",
                              "弹珠轨道"],
                    "brands": ["乐玩", "智多星", "巧手"]},
    "美妆 > 护肤": {"nouns": ["精华液", "保湿霜", "防晒霜", "洁面乳", "眼霜", "面膜", "爽肤水", "润唇膏"],
                    "brands": ["光采", "纯肌", "丝绒"]},
    "宠物 > 狗狗": {"nouns": ["牵引绳", "磨牙玩具", "狗窝", "零食袋", "胸背带", "食盆", "梳毛刷",
                              "宠物香波"],
                    "brands": ["爪爪", "汪星", "毛孩"]},
}
ADJECTIVES_ZH = ["经典款", "高端", "便携", "豪华", "环保", "专业版", "超轻", "轻量", "复古", "智能",
                 "基础款", "加固", "时尚", "迷你", "重型", "柔软"]
COLOURS_ZH = ["黑色", "白色", "蓝色", "红色", "绿色", "灰色", "藏青色", "橄榄绿", "沙色", "粉色"]


class Lang(enum.StrEnum):
    """Language of the synthetic catalogue's titles, categories and descriptions."""

    EN = "en"
    ZH = "zh"


def departments(lang: Lang | str = Lang.EN) -> list[str]:
    """Department (category path) names in the given language, in topic order."""
    return list(DEPARTMENTS_ZH if Lang(lang) == Lang.ZH else DEPARTMENTS)


@dataclass(frozen=True)
class StoreConfig:
    n_users: int = 2000
    n_items: int = 1200
    n_topics: int = 12
    mean_events: float = 30.0
    min_events: int = 8
    frac_jump: float = 0.25  # users whose interest jumps to a new topic at a known time
    frac_drift: float = 0.10  # users whose interest drifts gradually over a few events
    drift_len: int = 6
    p_interest: float = 0.9  # probability an event follows the current interest
    zipf_a: float = 1.1
    start: str = "2024-01-01"
    days: int = 365
    seed: int = 0
    domain: str = "store"
    lang: Lang = Lang.EN  # en | zh: language of item titles, categories and descriptions

    def __post_init__(self) -> None:
        from shiftrec.errors import ConfigError

        try:
            object.__setattr__(self, "lang", Lang(self.lang))
        except ValueError:
            raise ConfigError(f"store: lang must be one of {[x.value for x in Lang]}, "
                              f"got '{self.lang}'") from None


@dataclass
class Store:
    events: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame  # user_id, kind (stable|jump|drift), topic_before, topic_after, shift_index
    shifts: pl.DataFrame  # ground truth: user_id, shift_index, shift_time, topic_from, topic_to, kind
    config: StoreConfig

    def write(self, out_dir: str | Path, fmt: str = "parquet") -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            self.events.with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%SZ")
                                     ).write_csv(out / "events.csv")
            self.items.write_csv(out / "items.csv")
        else:
            self.events.write_parquet(out / "events.parquet")
            self.items.write_parquet(out / "items.parquet")
        self.users.write_parquet(out / "truth_users.parquet")
        self.shifts.write_parquet(out / "truth_shifts.parquet")
        write_json(out / "manifest.json", make_manifest(
            "synthetic_store", config={**self.config.__dict__, "lang": self.config.lang.value}, events=self.events.height,
            items=self.items.height, users=self.users.height, shifts=self.shifts.height))
        return out


def make_items(cfg: StoreConfig, rng: np.random.Generator) -> pl.DataFrame:
    zh = cfg.lang == Lang.ZH
    table = DEPARTMENTS_ZH if zh else DEPARTMENTS
    adjectives, colours = (ADJECTIVES_ZH, COLOURS_ZH) if zh else (ADJECTIVES, COLOURS)
    sep = "" if zh else " "
    depts = list(table)[: cfg.n_topics]
    if cfg.n_topics > len(depts):
        raise ValueError(f"n_topics must be <= {len(table)}")
    per = cfg.n_items // cfg.n_topics
    rows: dict[str, list[Any]] = {k: [] for k in ("item_id", "title", "category", "brand", "price")}
    for t, dept in enumerate(depts):
        spec = table[dept]
        base_price = float(np.exp(rng.normal(3.2, 0.6)))
        for j in range(per):
            noun = spec["nouns"][j % len(spec["nouns"])]
            rows["item_id"].append(f"I{t:02d}{j:05d}")
            rows["title"].append(sep.join([str(rng.choice(spec["brands"])), str(rng.choice(adjectives)),
                                           noun, str(rng.choice(colours))]))
            rows["category"].append(dept)
            rows["brand"].append(str(rng.choice(spec["brands"])))
            rows["price"].append(round(base_price * float(np.exp(rng.normal(0, 0.4))), 2))
    dept_leaf = pl.col("category").str.split(" > ").list.last()
    if zh:
        desc = pl.col("title") + "，来自" + dept_leaf + "系列。"
    else:
        desc = "A " + pl.col("title").str.to_lowercase() + " from the " + dept_leaf.str.to_lowercase() \
            + " range."
    df = pl.DataFrame(rows).with_columns(pl.lit(cfg.domain).alias("domain"), desc.alias("description"))
    return df.select("item_id", "domain", "title", "category", "brand", "description", "price")


def generate(cfg: StoreConfig | None = None) -> Store:
    """Vectorised generator: ~10M events in a few seconds."""
    cfg = cfg or StoreConfig()
    rng = np.random.default_rng(cfg.seed)
    items = make_items(cfg, rng)
    T, per = cfg.n_topics, cfg.n_items // cfg.n_topics
    U = cfg.n_users

    n_ev = np.maximum(cfg.min_events, rng.poisson(cfg.mean_events, U)).astype(np.int64)
    kind = rng.choice(3, size=U, p=[1 - cfg.frac_jump - cfg.frac_drift, cfg.frac_jump, cfg.frac_drift])
    # shifting users get long enough histories around the shift
    n_ev = np.where(kind > 0, np.maximum(n_ev, 20), n_ev)
    before = rng.integers(0, T, U)
    after = (before + rng.integers(1, T, U)) % T
    second = (before + rng.integers(1, T, U)) % T  # a minor stable secondary interest
    shift_at = np.where(kind > 0, (n_ev * rng.uniform(0.4, 0.65, U)).astype(np.int64), -1)

    indptr = np.concatenate([[0], np.cumsum(n_ev)])
    N = int(indptr[-1])
    uid = np.repeat(np.arange(U), n_ev)
    pos = np.arange(N) - np.repeat(indptr[:-1], n_ev)
    sa = shift_at[uid]
    k = kind[uid]
    # probability of being in the new interest: 0 before, 1 after (jump) or a ramp (drift)
    ramp = np.clip((pos - sa + 1) / cfg.drift_len, 0, 1)
    p_new = np.where(k == 0, 0.0, np.where(k == 1, (pos >= sa).astype(float), ramp))
    use_new = rng.random(N) < p_new
    main = np.where(use_new, after[uid], before[uid])
    r = rng.random(N)
    topic = np.where(r < cfg.p_interest * 0.8, main,
                     np.where(r < cfg.p_interest, second[uid], rng.integers(0, T, N)))
    # Zipf-like popularity within topic
    ranks = np.arange(1, per + 1, dtype=float)
    cdf = np.cumsum(ranks ** -cfg.zipf_a)
    cdf /= cdf[-1]
    within = np.searchsorted(cdf, rng.random(N))
    within = rng.permutation(per)[within]  # popular items are spread over the catalogue
    item_idx = topic * per + within

    start = np.datetime64(cfg.start, "s").astype(np.int64)
    span = cfg.days * 86400
    u_start = start + (rng.random(U) * span * 0.3).astype(np.int64)
    gaps = rng.exponential(span * 0.6 / np.maximum(n_ev, 1))[uid] * rng.exponential(1.0, N)
    gaps = np.maximum(gaps.astype(np.int64), 30)
    csum = np.cumsum(gaps)
    offs = csum - np.repeat(csum[indptr[:-1]] - gaps[indptr[:-1]], n_ev)
    # keep every user's history inside [start, start + days): shrink long histories to fit
    last = offs[indptr[1:] - 1]
    room = start + span - 1 - u_start
    scale = np.minimum(1.0, room / np.maximum(last, 1))
    offs = (offs * scale[uid]).astype(np.int64)
    ts = u_start[uid] + offs
    et = rng.choice(3, size=N, p=[0.7, 0.2, 0.1])

    item_ids = items["item_id"].to_numpy()
    user_names = np.char.add("U", np.arange(U).astype(str))
    events = pl.DataFrame({
        "user_id": user_names[uid], "item_id": item_ids[item_idx],
        "timestamp": pl.Series(ts * 1_000_000, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        "event_type": np.array(["view", "cart", "purchase"])[et],
        "value": np.ones(N), "domain": np.full(N, cfg.domain),
    })
    depts = np.array(departments(cfg.lang)[:T])
    kinds = np.array(["stable", "jump", "drift"])
    users = pl.DataFrame({"user_id": user_names, "kind": kinds[kind], "topic_before": depts[before],
                          "topic_after": np.where(kind > 0, depts[after], depts[before]),
                          "shift_index": shift_at, "n_events": n_ev})
    sh = np.flatnonzero(kind > 0)
    shifts = pl.DataFrame({
        "user_id": user_names[sh], "shift_index": shift_at[sh],
        "shift_time": pl.Series(ts[indptr[sh] + shift_at[sh]] * 1_000_000, dtype=pl.Int64
                                ).cast(pl.Datetime("us", "UTC")),
        "topic_from": depts[before[sh]], "topic_to": depts[after[sh]], "kind": kinds[kind[sh]]})
    return Store(events=events, items=items, users=users, shifts=shifts, config=cfg)


def cyclic_split(n_users: int = 60, n_items: int = 12, min_len: int = 6, max_len: int = 14,
                 seed: int = 0, popular: int | None = None) -> SeqSplit:
    """A tiny split with a known answer: every user walks the cycle 1 -> 2 -> ... -> n -> 1.

    Users start at a random item and follow the cycle; the last item is test, the one before
    valid. With `popular`, that item is inserted as an extra event at the start of every second
    user's sequence (so it is the most frequent training item)."""
    rng = np.random.default_rng(seed)
    seqs, times = [], []
    for u in range(n_users):
        n = int(rng.integers(min_len, max_len + 1))
        s = (int(rng.integers(0, n_items)) + np.arange(n)) % n_items + 1
        if popular is not None and u % 2 == 0:
            s = np.concatenate([[popular], s])
        seqs.append(s.astype(np.int64))
        times.append(1_600_000_000 + 3600 * np.arange(len(s), dtype=np.int64))
    train = Seqs.from_lists([s[:-2] for s in seqs], [t[:-2] for t in times])
    users = np.arange(n_users)

    def es(cut: int) -> EvalSet:
        hist = Seqs.from_lists([s[:len(s) - cut] for s in seqs], [t[:len(t) - cut] for t in times])
        return EvalSet(users, hist, np.array([s[len(s) - cut] for s in seqs]),
                       np.array([t[len(t) - cut] for t in times]))

    keys = np.array(["<pad>", *[f"d/{i}" for i in range(1, n_items + 1)]], dtype=object)
    return SeqSplit("cyclic", "leave_one_out", IdMap(keys), np.array([f"u{u}" for u in users], dtype=object),
                    train, es(2), es(1), meta={"max_len": 50, "fingerprint": f"cyclic-{seed}"})
