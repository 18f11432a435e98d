"""Realistic-looking shoppers, products and complaints for the simulators."""

from __future__ import annotations

import random

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛"]
PRODUCTS = [("SKU-TEA-001", "西湖龙井 250g", "168.00"), ("SKU-MUG-014", "骨瓷马克杯", "59.90"),
            ("SKU-KET-203", "电热水壶 1.7L", "199.00"), ("SKU-TOW-077", "纯棉浴巾", "89.00"),
            ("SKU-PIL-330", "乳胶枕", "259.00")]
REASONS = [("damaged", "收到时外包装破损，杯子有裂纹"), ("wrong_item", "发错颜色了，下单的是白色"),
           ("quality", "用了两天就不加热了"), ("changed_mind", "不想要了，未拆封"),
           ("size", "尺寸比描述的小"), ("missing", "少发了一件赠品")]
KINDS = ["refund", "return", "return", "exchange", "repair"]
CITIES = ["上海市浦东新区张江路", "杭州市西湖区文三路", "北京市朝阳区建国路", "广州市天河区体育西路"]


def phone(rng: random.Random) -> str:
    return f"1{rng.choice('3578')}{rng.randint(0, 9)}{rng.randint(10_000_000, 99_999_999)}"


def name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(["", *GIVEN])


def address(rng: random.Random) -> str:
    return rng.choice(CITIES) + f"{rng.randint(1, 999)}号"
