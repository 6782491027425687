"""What the demo's simulated shoppers do and say: the event vocabulary and its Markov chain, the hours they are
active, platforms and app versions, items, search keywords and profile values (Chinese text, emoji, quotes and
backslashes included, as real logs carry them). Weights are relative; ``cumulative`` turns them into the sorted
thresholds the generator draws from with ``bisect``."""

from __future__ import annotations

from typing import Any


def cumulative(weights: tuple[float, ...]) -> list[float]:
    out, s = [], 0.0
    for w in weights:
        s += w
        out.append(s)
    return out


MALFORMED_WEIGHTS = (30, 20, 12, 12, 14, 12)  # in the order of F.MALFORMED_KINDS

HOUR_WEIGHTS = (2.0, 1.2, 0.7, 0.4, 0.3, 0.4, 1.0, 2.5, 4.0, 4.5, 4.2, 4.5,
                 5.5, 5.0, 4.2, 4.0, 4.2, 4.5, 5.2, 6.0, 6.8, 7.0, 6.0, 3.8)

CHAIN: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "app_start": (("view_item", "search", "share"), (0.58, 0.37, 0.05)),
    "view_item": (("view_item", "search", "add_to_cart", "share"), (0.47, 0.2, 0.23, 0.1)),
    "search": (("view_item", "search", "share"), (0.7, 0.25, 0.05)),
    "add_to_cart": (("view_item", "checkout", "search"), (0.4, 0.45, 0.15)),
    "checkout": (("pay_order", "view_item", "search"), (0.65, 0.25, 0.1)),
    "pay_order": (("view_item", "search", "share"), (0.5, 0.3, 0.2)),
    "share": (("view_item", "search"), (0.6, 0.4)),
}


CHAIN_CUM = {k: (names, cumulative(w)) for k, (names, w) in CHAIN.items()}
HOUR_CUM = cumulative(HOUR_WEIGHTS)

PLATFORMS = ("iOS", "Android", "Web", "小程序")
PLATFORM_CUM = cumulative((0.36, 0.44, 0.10, 0.10))
PLATFORM_INFO: dict[str, dict[str, Any]] = {
    "iOS": {
        "lib": "iOS", "lib_version": "4.5.2", "os": ("iOS",), "os_version": ("16.7.8", "17.6.1", "18.1"),
        "model": ("iPhone 13", "iPhone 14 Pro", "iPhone 15", "iPhone 16 Pro Max", "iPad Air"),
        "channel": (("App Store",), (1.0,)),
    },
    "Android": {
        "lib": "Android", "lib_version": "4.5.3", "os": ("Android",), "os_version": ("11", "12", "13", "14"),
        "model": ("HUAWEI Mate 60", "Xiaomi 14", "OPPO Reno11", "vivo X100", "Redmi K70", "HONOR 100", "Galaxy S24"),
        "channel": (("华为应用市场", "小米应用商店", "应用宝", "OPPO软件商店", "vivo应用商店", "Google Play", "官网下载"),
                    (0.3, 0.2, 0.2, 0.12, 0.1, 0.03, 0.05)),
    },
    "Web": {
        "lib": "JS", "lib_version": "4.5.1", "os": ("Windows", "Mac OS X", "iOS", "Android"),
        "os_version": ("10", "11", "14.6"), "model": ("PC", "Mac", "mobile"),
        "channel": (("百度搜索", "直接访问", "微信分享", "今日头条"), (0.4, 0.35, 0.15, 0.1)),
    },
    "小程序": {
        "lib": "WeChat", "lib_version": "4.5.0", "os": ("iOS", "Android"), "os_version": ("8.0.50", "8.0.53"),
        "model": ("iPhone 15", "HUAWEI Mate 60", "Xiaomi 14"),
        "channel": (("微信", "微信分享", "小程序码"), (0.6, 0.3, 0.1)),
    },
}
# (version, first day it exists relative to the start, weight among older installs)
VERSIONS = (("3.1.4", -999, 0.15), ("3.2.0", -999, 0.25), ("3.2.1", -999, 0.60), ("3.3.0", 5, 0.0))
NETWORKS = ("WIFI", "WIFI", "WIFI", "5G", "4G")

ITEMS = (  # (name, category, list price)
    ("无线蓝牙耳机 🎧", "数码", 299.0), ("机械键盘⌨️", "数码", 399.0), ("智能手表 Pro", "数码", 1299.0),
    ("手机壳 iPhone 16", "数码", 39.9), ("4K 显示器 27英寸", "数码", 1999.0), ("纯棉T恤", "服饰", 79.0),
    ('Tシャツ "limited"', "服饰", 129.0), ("羽绒服 女 长款", "服饰", 899.0), ("运动跑鞋 男款", "运动", 459.0),
    ("露营帐篷⛺", "运动", 599.0), ("有机牛奶 1L", "食品", 19.9), ("咖啡豆 ☕ 500g", "食品", 89.0),
    ("坚果礼盒 🎁", "食品", 128.0), ("Café crème", "食品", 9.9), ("Python编程：从入门到实践", "图书", 69.8),
    ("儿童绘本（全10册）", "图书", 99.0), ("保湿面霜", "美妆", 239.0), ("口红 #999", "美妆", 320.0),
    ("电动牙刷", "家居", 199.0), ("空气炸锅", "家居", 349.0), ("猫粮 🐱 2kg", "家居", 59.0),
    ("婴儿湿巾 80抽×10", "母婴", 49.9),
)
KEYWORDS = ("耳机", "蓝牙耳机 降噪", "iPhone 16", "连衣裙", "咖啡☕", "🎁 生日礼物", "零食大礼包", "跑步鞋 男",
             "python", "口红 #999", "猫粮 🐱", "儿童 绘本", "露营装备⛺", "双十一 优惠券", "  空格  ", 'say "hi"',
             "C:\\path\\to", "Café au lait", "😀😀😀", "手机", "羽绒服 女 长款", "新疆 葡萄干", "4K 显示器")
PAY_METHODS = ("微信支付", "支付宝", "Apple Pay", "银联", "花呗")
SHARE_TO = ("微信好友", "朋友圈", "微博", "QQ", "复制链接")
SIGNUP_ENTRY = ("首页弹窗", "我的", "结算页", "活动页")
SIGNUP_METHOD = ("手机号", "微信", "Apple ID", "邮箱")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ("伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "霞", "平")
CITIES = ("北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "西安", "南京", "重庆", "苏州", "长沙")
GENDERS = ("男", "女", "女", "男", "未知")
